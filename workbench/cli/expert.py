"""``workbench expert``: what one expert does (terminal summary, HTML page); ``workbench find``: text search."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from workbench.experts import ExpertPage, LogitEffect

EXAMPLE = """
Examples:

  workbench expert runs/suite.zarr 3:17

  workbench expert runs/suite.zarr 3:17 --where domain=math --export L3E17.html

  workbench expert runs/suite.zarr 3:17 --model k2-mini     (adds its logit effect)

  workbench find runs/suite.zarr "def "          (literal text, across token boundaries)

  workbench find runs/suite.zarr "\\d+ \\* \\d+" --regex --where domain=math
"""


def parse_layer_expert(text: str) -> tuple[int, int]:
    """``"3:17"`` or ``"L3:E17"`` -> (3, 17); anything else is a one-line error."""
    from workbench.experts import ExpertPageError

    a, sep, b = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(a.strip().lstrip("Ll")), int(b.strip().lstrip("Ee"))
    except ValueError:
        raise ExpertPageError(f"name the expert as LAYER:EXPERT (e.g. 3:17 or L3:E17), got {text!r}") from None


def print_page(page: ExpertPage) -> None:
    """A rich summary of the page in the terminal."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console()
    uniform = page.top_k / page.n_experts
    con.print(f"[bold]Expert {page.title}[/] of {page.model} · selection: {escape(page.selection)} · "
              f"{page.n_routed:,}/{page.n_selected:,} tokens ({page.load:.2%}; uniform {uniform:.2%})")  # fmt: skip
    for note in page.notes:
        con.print(f"[yellow]note:[/] {escape(note)}")
    t = Table(title=f"Top contexts (by {page.context_order})", show_lines=False, expand=True)
    for col in ("weight", "rank" if page.rank_ordered else "slot", "context", "sequence · domain · segment", "×"):
        t.add_column(col, overflow="fold")
    for c in page.contexts[:12]:
        w = f"{c.gate_weight:.3f}" if page.has_gate_weights else "–"
        t.add_row(w, str(c.rank), f"{escape(c.before)}[reverse bold]{escape(c.token)}[/]{escape(c.after)}",
                  f"{escape(c.sequence)} · {c.domain} · {c.segment}", str(c.copies))  # fmt: skip
    con.print(t)
    t = Table(title="Tokens by lift (P(token|here) / P(token|selection), smoothed) and by frequency")
    for col in ("token", "here", "lift", "VS", "│ frequent", "here", "freq."):
        t.add_column(col)
    for a, b in zip(page.lift[:12], page.frequent[:12], strict=False):
        t.add_row(escape(a.text), str(a.count), f"{a.lift:.2f}", f"{a.specialization:.2f}",
                  escape(b.text), str(b.count), f"{b.frequency:.1%}")  # fmt: skip
    con.print(t)
    for name, rows in (("domain", page.domain_shares), ("segment", page.segment_shares)):
        t = Table(title=f"Share by {name} vs base rate (95% bootstrap over sequences)")
        for col in (name, "tokens", "share", "interval", "base", "ratio"):
            t.add_column(col)
        for r in rows:
            t.add_row(r.group, str(r.routed), f"{r.share:.1%}", f"{r.share_low:.1%}–{r.share_high:.1%}",
                      f"{r.base:.1%}", f"{r.ratio:.2f}")  # fmt: skip
        con.print(t)
    ranks = " ".join(f"{i + 1}:{n}" for i, n in enumerate(page.rank_hist.tolist()))
    con.print(f"{'router rank (1 = first choice)' if page.rank_ordered else 'top-k slot (unordered capture)'}: {ranks}")
    if page.weight_hist.size:
        e = page.weight_edges
        con.print(f"gate weight: {page.weight_hist.sum()} tokens in [{e[0]:.2f}, {e[-1]:.2f}], "
                  f"mode bin {e[page.weight_hist.argmax()]:.2f}–{e[page.weight_hist.argmax() + 1]:.2f}")  # fmt: skip
    for label, items in (("co-activated", page.co_activated), ("predecessors", page.predecessors),
                         ("successors", page.successors)):  # fmt: skip
        shown = ", ".join(f"L{n.layer}:E{n.expert} {n.count} ({n.share:.0%}, ×{n.lift:.1f})" for n in items[:6])
        con.print(f"{label}: {shown or '–'}")
    if page.logit_effect is not None:
        print_logit_effect(page.logit_effect)


def print_logit_effect(le: LogitEffect) -> None:
    """The expert's promoted / suppressed tokens (mean direct logit attribution) and masking Δloss."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    con = Console()
    t = Table(title=f"Logit effect: mean direct logit attribution over {le.n_tokens} of {le.n_routed} routed tokens "
                    "(gate weight × expert output, final norm frozen, unembedding)")  # fmt: skip
    for col in ("promoted", "logit", "│ suppressed", "logit"):
        t.add_column(col)
    for a, b in zip(le.promoted, le.suppressed, strict=False):
        t.add_row(Text(a.text), f"{a.logit:+.3f}", Text(b.text), f"{b.logit:+.3f}")  # Text: no markup, as is
    con.print(t)
    con.print(f"masking it: next-token loss {le.base_loss:.3f} → {le.base_loss + le.delta_loss:.3f} nats "
              f"(Δ {le.delta_loss:+.4f}) at {le.n_loss} routed positions with a next token")  # fmt: skip
    for note in le.notes:
        con.print(f"[yellow]note:[/] {escape(note)}")


def expert(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    which: Annotated[str, typer.Argument(metavar="LAYER:EXPERT", help="e.g. 3:17 (real MoE layer index).")],
    where: Annotated[list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math (repeatable).")] = None,
    export: Annotated[str | None, typer.Option("--export", "-o", help="Write a self-contained HTML page here.")] = None,
    top: Annotated[int, typer.Option(help="Rows per list (contexts, tokens).")] = 20,
    width: Annotated[int, typer.Option(help="Decoded tokens shown each side of a context's token.")] = 8,
    min_count: Annotated[int, typer.Option(help="Minimum routed count for a token to be ranked by lift.")] = 3,
    model: Annotated[
        str | None,
        typer.Option(help="The store's model (k2-mini or a checkpoint dir): adds the expert's logit effect."),
    ] = None,
    logit_tokens: Annotated[int, typer.Option(help="With --model: routed tokens re-run (highest gate weights).")] = 256,
    trust_remote_code: Annotated[bool, typer.Option(help="With --model: load the checkpoint's own code.")] = False,
) -> None:
    """What one expert does: top contexts, tokens special to it, domain/segment shares, histograms, neighbours."""
    from workbench.errors import WorkbenchError
    from workbench.experts import expert_page
    from workbench.store.io import open_store
    from workbench.store.select import parse_where

    layer, exp = parse_layer_expert(which)
    target = Path(export) if export else None
    if target is not None:
        if target.suffix.lower() not in (".html", ".htm"):
            raise WorkbenchError(f"--export writes an HTML page; give a .html file, got {export!r}")
        if not target.parent.is_dir():
            raise WorkbenchError(f"cannot write {export}: folder {target.parent} does not exist")
    sel = parse_where(where) if where else None
    ds = open_store(store)
    if logit_tokens < 1:
        raise WorkbenchError(f"--logit-tokens must be at least 1, got {logit_tokens}")
    loaded = None
    if model is not None:
        from workbench.experts.logit_effect import check_matches
        from workbench.models import load_model, planned_routing_config, read_model_config, resolve_model_path

        # refuse a model that does not match the store from its config.json, before the (slow) weights load
        vocab = read_model_config(resolve_model_path(model)).get("vocab_size")
        planned = planned_routing_config(model, trust_remote_code=trust_remote_code).to_attrs()
        check_matches(ds, planned, int(vocab) if vocab else None)
        loaded, _ = load_model(model, trust_remote_code=trust_remote_code)
    page = expert_page(
        ds, layer, exp, sel, loaded, top=top, width=width, min_count=min_count, logit_tokens=logit_tokens
    )
    print_page(page)
    if target is not None:
        from workbench.viz.expert_page import write_page_html

        write_page_html(page, target)
        typer.echo(f"wrote {target}")


def find_cmd(
    store: Annotated[str, typer.Argument(help="Routing store (directory or fsspec URL).")],
    text: Annotated[str, typer.Argument(help="Text to find (or a regular expression with --regex).")],
    regex: Annotated[bool, typer.Option(help="Treat TEXT as a Python regular expression.")] = False,
    ignore_case: Annotated[bool, typer.Option(help="Match case-insensitively.")] = False,
    where: Annotated[list[str] | None, typer.Option(help="Selection KEY=VALUE, e.g. domain=math (repeatable).")] = None,
    max_hits: Annotated[int, typer.Option(help="Stop after this many hits.")] = 50,
) -> None:
    """Find text in the decoded tokens of a store (across token boundaries); prints the token rows of each hit."""
    from rich.console import Console
    from rich.markup import escape

    from workbench.experts import find
    from workbench.store.io import open_store
    from workbench.store.select import parse_where

    ds = open_store(store)
    hits = find(ds, text, regex=regex, ignore_case=ignore_case, max_hits=max_hits,
                selection=parse_where(where) if where else None)  # fmt: skip
    con = Console()
    for h in hits:
        place = f"{escape(h.sequence)} · {h.domain} · {h.segment} · pos {h.position}"
        shown = f"{escape(h.before)}[reverse bold]{escape(h.text)}[/]{escape(h.after)}"
        con.print(f"rows {h.start}:{h.stop}  {place}  …{shown}…", soft_wrap=True)
    con.print(f"{len(hits)} hit(s){' (stopped at --max-hits)' if len(hits) >= max_hits else ''}")


def register(app: typer.Typer) -> None:
    app.command("expert", help=(expert.__doc__ or "") + "\n" + EXAMPLE)(expert)
    app.command("find", help=(find_cmd.__doc__ or "") + "\n" + EXAMPLE)(find_cmd)
