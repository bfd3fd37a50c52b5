"""The graph pane's *Export graph* button, kernel side: what it asks the browser for and what it writes.

The browser half (plot_image.js composing the image, compared pixel by pixel with plotly.js's toImage)
is tests/test_plot_image_browser.py, and the whole round trip in JupyterLab is tests/test_browser.py.
Here the browser's reply is the message plot_pane.js sends (``{"type": "image", "id", "error",
"method", "width", "height", "scale", ...}`` plus the file's bytes), delivered to the widget's own
message handler, on a real synthetic transcript store (an error reply: tests/test_widgets_linking.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from widgets_helpers import open_test_store, transcript_store
from workbench.viz.widgets import TranscriptGraphWidget
from workbench.viz.widgets.graph_pane import BUTTON_PNG_SCALE

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # the kernel writes what the browser sends, as it is


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return open_test_store(transcript_store(tmp_path_factory.mktemp("s") / "t.zarr", n_steps=3, n_transcripts=1))


@pytest.fixture
def live(ds: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[TranscriptGraphWidget, list[dict[str, Any]]]:
    """A widget whose graph pane a (simulated) browser has drawn; the messages it sends are kept."""
    w = TranscriptGraphWidget(ds)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(w.graph.plot, "send", lambda content, buffers=None: sent.append(content))
    w.graph.plot._on_message(w.graph.plot, {"type": "rendered"}, [])
    assert w.graph.plot.live
    return w, sent


def reply(w: TranscriptGraphWidget, request: dict[str, Any], data: bytes | None, **info: Any) -> None:
    """The browser's answer to ``request``, as plot_pane.js sends it."""
    content = {"type": "image", "id": request["id"], "error": info.pop("error", ""), **info}
    w.graph.plot._on_message(w.graph.plot, content, [data] if data is not None else [])


def test_png_button_asks_for_the_shown_size_at_scale_2_and_writes_the_reply(live, tmp_path: Path) -> None:
    w, sent = live
    w.graph.path.value = str(tmp_path / "g")
    w.graph.export_button.click()
    (req,) = sent
    assert req == {"type": "image", "id": req["id"], "format": "png", "width": None, "height": None,
                   "scale": BUTTON_PNG_SCALE}  # fmt: skip
    assert w.graph.status.value == "exporting ..." and not list(tmp_path.iterdir())
    reply(w, req, PNG_BYTES, method="live", width=619.438, height=500, scale=2.0, ms=120.0)
    assert (tmp_path / "g.png").read_bytes() == PNG_BYTES
    assert list(tmp_path.iterdir()) == [tmp_path / "g.png"]  # written atomically: no temporary left
    assert "wrote" in w.graph.status.value and "g.png" in w.graph.status.value
    assert "(1238 × 1000 px)" in w.graph.status.value  # whole pixels, as the browser's canvas has them
    assert w.graph.plot.last_image["method"] == "live"


def test_svg_reply_gets_the_figure_title(live, tmp_path: Path) -> None:
    w, sent = live
    w.graph.format.value = "svg"
    w.graph.path.value = str(tmp_path / "g.svg")
    w.graph.export_button.click()
    (req,) = sent
    assert req["format"] == "svg" and req["scale"] == 1.0
    svg = '<svg class="main-svg" xmlns="http://www.w3.org/2000/svg" width="600" height="500"><g/></svg>'
    reply(w, req, svg.encode(), method="live", width=600, height=500, scale=1.0)
    text = (tmp_path / "g.svg").read_text(encoding="utf-8")
    assert text.startswith('<svg class="main-svg"') and "<title>t0: step 0 (" in text
    assert "(600 × 500 px)" in w.graph.status.value


def test_each_reply_goes_to_its_own_request(live, tmp_path: Path) -> None:
    w, sent = live
    for name in ("a", "b", "c"):
        w.graph.path.value = str(tmp_path / name)
        w.graph.export_button.click()
    assert len({r["id"] for r in sent}) == 3
    reply(w, sent[0], b"\x89PNG a", method="live", width=10, height=10, scale=2.0)  # one answered first
    w.graph.path.value = str(tmp_path / "d")
    w.graph.export_button.click()  # a new request while b and c wait: its own id
    assert len({r["id"] for r in sent}) == 4
    for req, data in zip(sent[1:], (b"\x89PNG b", b"\x89PNG c", b"\x89PNG d"), strict=True):
        reply(w, req, data, method="live", width=10, height=10, scale=2.0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        "a.png": b"\x89PNG a", "b.png": b"\x89PNG b", "c.png": b"\x89PNG c", "d.png": b"\x89PNG d",
    }  # fmt: skip
