"""``workbench verify STORE``: the routing store's fsck: read every committed chunk, say what is damaged."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

EXAMPLE = """
Examples:

  workbench verify runs/k2.zarr

  workbench verify s3://bucket/k2.zarr --json > verify.json
"""


def register(app: typer.Typer) -> None:
    @app.command(epilog=EXAMPLE)
    def verify(
        store: Annotated[str, typer.Argument(help="Routing store directory or fsspec URL.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
        workers: Annotated[int, typer.Option(min=1, help="Chunks read and decoded in parallel.")] = 4,
    ) -> None:
        """Check every committed chunk (checksums, fill values, decoding), the commit record and the tables.

        Prints what is damaged (array, chunk key, rows, which sequences) and which sequences are intact.
        Exit 0 when the store is intact, 2 when it is damaged (with a one-line summary on stderr).
        """
        from workbench.errors import StoreDamagedError
        from workbench.store.verify import verify_store

        report = verify_store(store, progress=progress and sys.stderr.isatty(), workers=workers)
        if as_json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print("\n".join(report.lines()))
        if not report.ok:
            raise StoreDamagedError(report.summary())
