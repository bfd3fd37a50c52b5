"""The front door: ``import workbench`` (lazy, light, typed), ``ds.routing`` (real signatures, ``graph``),
errors that name Python parameters (the CLI words them as flags), and the bundled data's location."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import xarray as xr

import workbench
from workbench import analysis
from workbench.errors import WorkbenchError
from workbench.graph.build import reasoning_graph
from workbench.store.select import parse_where

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "plotly", "dask.distributed", "dask", "zarr", "xarray", "numba", "networkx")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "s.zarr"
    workbench.synthetic_store(path, n_tokens=4000, n_layers=4, n_experts=16, k=2, mean_length=200, progress=False)
    return path


@pytest.fixture(scope="module")
def store(store_path: Path) -> xr.Dataset:
    return workbench.open_store(store_path)


def test_import_workbench_loads_nothing_heavy() -> None:
    out = _python("import sys, workbench; print(sorted(m for m in sys.modules if m.split('.')[0] != 'workbench'))")
    assert out.returncode == 0, out.stderr
    loaded = set(eval(out.stdout))
    assert not loaded & set(HEAVY), f"`import workbench` imported {sorted(loaded & set(HEAVY))}"


def test_all_is_the_lazy_table_and_dir_lists_it() -> None:
    assert set(workbench.__all__) == {"__version__", *workbench._LAZY}
    assert set(workbench.__all__) <= set(dir(workbench))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = workbench.nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(set(workbench.__all__) - {"__version__"}))
def test_every_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(workbench, name)
    module = importlib.import_module(workbench._LAZY[name])
    assert value is getattr(module, name)
    assert callable(value)


def test_open_store_gives_the_accessor_and_the_store_layer_does_not() -> None:
    code = (
        "import sys, xarray as xr, workbench.store.io\n"
        "print(hasattr(xr.Dataset, 'routing'))\n"
        "import workbench; workbench.open_store\n"
        "print(hasattr(xr.Dataset, 'routing'), 'workbench.analysis' in sys.modules, 'networkx' in sys.modules)\n"
        "xr.Dataset().routing.expert_load\n"
        "print('workbench.analysis' in sys.modules)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    # registered by open_store; analysis and graphs load on the first method look-up, not before
    assert out.stdout.split() == ["False", "True", "False", "False", "True"]


def test_forwarders_keep_the_real_signatures_and_docs(store: xr.Dataset) -> None:
    sel = inspect.signature(store.routing.select)
    assert list(sel.parameters) == ["selection", "where", "keys"]
    for name in ("expert_load", "routing_entropy", "coactivation", "transitions", "domain_divergence", "compare"):
        real = inspect.signature(getattr(analysis, name) if name != "compare" else workbench.compare)
        method = getattr(store.routing, name)
        got = inspect.signature(method)
        assert list(got.parameters) == ["selection", "where", *list(real.parameters)[2:]], name
        for p in list(real.parameters.values())[2:]:
            assert got.parameters[p.name].default == p.default, (name, p.name)
        assert method.__doc__ == (getattr(analysis, name) if name != "compare" else workbench.compare).__doc__
    g = inspect.signature(store.routing.graph)
    assert {"selection", "where", "min_count", "top_edges", "flow", "top_tokens"} <= set(g.parameters)


def test_forwarders_compute_what_the_functions_compute(store: xr.Dataset) -> None:
    via = store.routing.expert_load(where="domain=math", by="domain")
    direct = analysis.expert_load(store, parse_where("domain=math"), by="domain")
    xr.testing.assert_identical(via, direct)
    with pytest.raises(TypeError):
        store.routing.expert_load(None, "domain")  # everything after selection is keyword-only, as shown


def test_routing_graph_is_the_reasoning_graph_of_the_selection(store: xr.Dataset) -> None:
    g = store.routing.graph(where=["domain=code", "layers=1:3"], top_edges=5)
    ref = reasoning_graph(store, parse_where(["domain=code", "layers=1:3"]), top_edges=5)
    assert isinstance(g, nx.DiGraph) and g.number_of_edges() > 0
    assert nx.utils.graphs_equal(g, ref)
    assert g.graph["selection"] == ref.graph["selection"] and "domain=code" in g.graph["selection"]
    sub = store.routing.select(where="domain=code")
    assert sub.sizes["token"] == int(g.graph["n_tokens"])


def test_library_errors_name_parameters_and_the_cli_names_flags(
    store: xr.Dataset, store_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(WorkbenchError, match=r"^ci must be in \(0, 1\)") as err:
        store.routing.domain_divergence(ci=1.5, n_boot=2, n_perm=2)
    assert err.value.param == "ci" and err.value.for_cli().startswith("--ci must be")
    with pytest.raises(WorkbenchError, match=r"^by must be one of") as err:
        store.routing.expert_load(by="colour")
    assert err.value.for_cli({"by": "--group-by"}).startswith("--group-by must be one of")
    assert WorkbenchError("top_edges must be >= 1", param="top_edges").for_cli() == "--top-edges must be >= 1"
    assert WorkbenchError("no parameter here").for_cli() == "no parameter here"
    cli = [str(Path(sys.executable).parent / "workbench"), "compare", str(store_path), "--out", str(tmp_path)]
    out = subprocess.run([*cli, "--by", "colour"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --by must be one of"), out.stderr


def test_bundled_data_is_found_in_the_checkout() -> None:
    from workbench.models import BUNDLED, resolve_model_path
    from workbench.paths import bundled, data_dir, notebooks_dir

    assert data_dir() == REPO / "data"
    assert notebooks_dir() == REPO / "notebooks"
    assert bundled("prompts/suite.jsonl").is_file()
    assert resolve_model_path("k2-mini") == REPO / "data" / "models" / "k2-mini" == BUNDLED["k2-mini"]


def test_missing_data_is_one_line_saying_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.models import resolve_model_path
    from workbench.paths import DATA_ENV, bundled

    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(WorkbenchError) as err:
        resolve_model_path("k2-mini")
    msg = str(err.value)
    assert "\n" not in msg and f"{DATA_ENV}={tmp_path}" in msg and "pip install" in msg
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "suite.jsonl").write_text("{}\n")
    assert bundled("prompts/suite.jsonl") == tmp_path / "prompts" / "suite.jsonl"


@pytest.mark.slow
def test_a_non_editable_install_finds_its_bundled_data(tmp_path: Path) -> None:
    """Lay the package out as a non-editable install does (setuptools' build_py: the files a wheel holds,
    package data included), away from the checkout, and resolve the mini K2 and the transcripts there."""
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py", "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    code = (
        "import workbench, workbench.paths as p; from workbench.models import resolve_model_path\n"
        "print(workbench.__file__); print(resolve_model_path('k2-mini')); print(p.bundled('transcripts'))\n"
        "try:\n    p.notebooks_dir()\nexcept workbench.WorkbenchError as err:\n    print(str(err).split()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site), "WORKBENCH_DATA": ""},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    init, model, transcripts, notebooks_error = out.stdout.split()
    assert notebooks_error == "notebooks"  # "the notebooks ship with the source repository, ..."
    assert Path(init).is_relative_to(site)
    assert Path(model) == site / "workbench" / "data" / "models" / "k2-mini"
    shipped = (REPO / "data" / "models" / "k2-mini" / "model.safetensors").read_bytes()
    assert (Path(model) / "model.safetensors").read_bytes() == shipped
    assert any(p.suffix == ".jsonl" for p in Path(transcripts).iterdir())
