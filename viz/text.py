"""User text (domain names, sequence ids, segment names, token text, titles) made safe for plotly text.

Plotly renders every text it draws (hover labels, titles, legend entries, tick labels, annotations) with
a subset of HTML: ``<b>``, ``<i>``, ``<br>``, ``<span style>`` and live ``<a href>`` links, and it
substitutes ``%{...}`` variables in hover templates. A domain named ``<a href="https://x">math</a>`` would
therefore draw a clickable link in a report, and a sequence id containing ``%{x}`` would print a number.
``plain`` turns any user string into text plotly shows literally: ``&``, ``<`` and ``>`` become the
entities plotly decodes back (``&amp;``, ``&lt;``, ``&gt;``) and ``%`` becomes ``&#37;`` so no template
variable can form. Quotes are left alone: plotly decodes only a few named entities (not ``&quot;``), and
quotes cannot open a tag without ``<``.

Every figure in ``workbench.viz`` passes user text through ``plain`` (or ``plain_all``) before it becomes
a trace name, hover text, title or category label; the workbench's own markup (``<br>``, ``<b>``) is
added around the escaped text, never inside it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go


def plain(text: object) -> str:
    """``str(text)`` with plotly's markup characters escaped, so plotly shows it exactly as written."""
    return html.escape(str(text), quote=False).replace("%", "&#37;")


def plain_all(texts: Iterable[object]) -> list[str]:
    """``plain`` of each item (category labels, legend names, per-point hover text)."""
    return [plain(t) for t in texts]


def unmarked(markup: str) -> str:
    """Plotly text without its markup: tags dropped (``<br>`` becomes " — "), entities decoded.

    The inverse view of ``plain`` for places that show plain text, such as a PDF's or SVG's title
    metadata. Escaped user text stays text: its ``<`` is an entity until decoded here, after the tags.
    """
    return html.unescape(re.sub(r"<[^>]*>", "", re.sub(r"<br\s*/?>", " — ", markup)))


def figure_title(fig: go.Figure) -> tuple[str, str]:
    """(title, description) of a figure as plain text: ``layout.meta`` if it has them, else the title text.

    Both are plotly text (escaped user text inside the figure's markup), so markup is dropped and
    entities decoded here (``unmarked``).
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    title = unmarked(str(meta.get("title") or fig.layout.title.text or "")) or "workbench figure"
    return title, unmarked(str(meta.get("description") or ""))
