"""Domain comparison widget on a real store of three synthetic domains with domain-specific routing."""

from __future__ import annotations

import numpy as np
import pytest
from widgets_helpers import domain_store, open_test_store
from workbench.viz.widgets import DomainComparisonWidget

from workbench.analysis import domain_divergence, expert_load
from workbench.errors import WorkbenchError
from workbench.store.select import Selection


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory):
    return open_test_store(domain_store(tmp_path_factory.mktemp("d") / "dom.zarr"))


def test_shows_the_analysis_numbers_for_the_chosen_layers_and_domains(ds) -> None:
    w = DomainComparisonWidget(ds, domains=["math", "code"], layers=(2, 4), n_boot=50, n_perm=50)
    sel = Selection(domains=("math", "code"), layers=(2, 4))
    load = expert_load(ds, sel, by="domain")
    hm = w.heatmap.data[0]
    assert list(hm.y) == ["2", "3", "4"]
    assert np.allclose(np.asarray(hm.z), load["relative_load"].sel(domain=w.heatmap_of.value).values)
    div = domain_divergence(ds, sel, n_boot=50, n_perm=50)
    jsd = w.divergence_figure.data[0]
    assert list(jsd.x) == [2, 3, 4]
    assert np.allclose(np.asarray(jsd.y), div["jsd"].values[0])
    assert np.all(np.asarray(jsd.error_y.array) >= 0)  # intervals drawn around the estimate
    # the bands differ by domain, so divergence is far above its permutation null
    assert np.all(div["jsd"].values[0] > 3 * div["null_mean"].values[0])
    assert "math" in w.table.value and "<table" in w.table.value


def test_controls_recompute_on_compare(ds) -> None:
    w = DomainComparisonWidget(ds, n_boot=20, n_perm=20)
    assert len(w.divergence_figure.data) == 2 * 3  # three pairs, each estimate + null
    w.domains.value = ("code", "language")
    w.layers.value = (1, 1)
    w.compare_button.click()
    assert [t.name for t in w.divergence_figure.data if t.showlegend is not False] == ["code vs language"]
    assert list(w.heatmap.data[0].y) == ["1"]
    w.heatmap_mode.value = "contrast"
    z = np.asarray(w.heatmap.data[0].z)
    assert z.shape == (1, 64) and abs(z.sum()) < 1e-9  # shares minus shares sum to zero


def test_bad_choices_are_one_clear_line(ds) -> None:
    with pytest.raises(WorkbenchError, match="unknown domain"):
        DomainComparisonWidget(ds, domains=["poetry", "math"])
    w = DomainComparisonWidget(ds, n_boot=10, n_perm=10)
    w.domains.value = ("math",)
    w.compare_button.click()
    assert "at least two domains" in w.status.value


def test_a_heatmap_click_shows_the_experts_card_over_the_selected_domains(ds) -> None:
    from workbench.experts import expert_page

    w = DomainComparisonWidget(ds, domains=["math", "code"], layers=(2, 4), n_boot=20, n_perm=20)
    w.heatmap_plot.click("usage", 1, 7)  # row 1 = layer 3, column = expert 7, as plotly reports a heatmap cell
    page = w.card.page
    assert page is not None and (page.layer, page.expert) == (3, 7)
    ref = expert_page(ds, 3, 7, Selection(domains=("math", "code")), top=8, width=6)
    assert (page.n_routed, page.n_selected) == (ref.n_routed, ref.n_selected)
    assert [s.group for s in page.domain_shares] == [s.group for s in ref.domain_shares]
    assert "Expert L3:E7" in w.card.value and "By domain" in w.card.value
