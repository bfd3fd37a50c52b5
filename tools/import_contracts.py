"""Let ``lint-imports`` see ``workbench.hooks`` and ``workbench.viz``, which live outside ``workbench/``.

pyproject.toml maps those two subpackages to the top-level folders ``hooks/`` and ``viz/``
(``[tool.setuptools] package-dir``). grimp, the graph builder under import-linter, finds a root
package's modules by walking its one folder, so it would not see them, and it refuses a subpackage
as a root (``NotATopLevelModule``). This module, named in ``[tool.importlinter] contract_types`` so
that ``lint-imports`` imports it before it builds the graph, lets the subpackages that ``package-dir``
maps elsewhere be roots too: their modules then join the graph under their real names
(``workbench.hooks.recorder``), and every contract sees every module.

It also defines the ``acyclic_modules`` contract: no import cycle between any two modules of the
given packages (import-linter's own contracts check cycles between packages, not between modules).
Run by ``make test``; see docs/architecture.md.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import grimp
from grimp.adaptors.packagefinder import ImportLibPackageFinder
from grimp.application.config import settings as grimp_settings
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def mapped_subpackages(pyproject: Path = PYPROJECT) -> set[str]:
    """Python subpackages that ``[tool.setuptools] package-dir`` maps to a folder other than their parent's child.

    Folders without ``__init__.py`` (``workbench.data``, the bundled data) hold no code and are left out.
    """
    table = tomllib.loads(pyproject.read_text())["tool"]["setuptools"].get("package-dir", {})
    out = set()
    for name, folder in table.items():
        parent, _, leaf = name.rpartition(".")
        moved = Path(folder) != Path(table.get(parent, parent.replace(".", "/"))) / leaf
        if parent and moved and (pyproject.parent / folder / "__init__.py").is_file():
            out.add(name)
    return out


class _PackageDirFinder(ImportLibPackageFinder):
    """grimp's package finder, which also accepts the subpackages that ``package-dir`` maps elsewhere."""

    def __init__(self, mapped: set[str]) -> None:
        self.mapped = mapped

    def determine_package_directories(self, package_name: str, file_system: Any) -> set[str]:
        if package_name in self.mapped:
            spec = importlib.util.find_spec(package_name)
            if spec is None or not spec.submodule_search_locations:
                raise ValueError(f"{package_name} is mapped in pyproject.toml but cannot be found; pip install -e .")
            return set(spec.submodule_search_locations)
        return super().determine_package_directories(package_name, file_system)


grimp_settings.configure(PACKAGE_FINDER=_PackageDirFinder(mapped_subpackages()))


def module_cycles(graph: grimp.ImportGraph, packages: set[str]) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module), each sorted, among ``packages``."""
    nodes = sorted(m for m in graph.modules if any(m == p or m.startswith(p + ".") for p in packages))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def edges(m: str) -> list[str]:
        return sorted(n for n in graph.find_modules_directly_imported_by(m) if n in nodes_set)

    nodes_set = set(nodes)
    for root in nodes:  # iterative Tarjan
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(edges(nxt))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


class AcyclicModulesContract(Contract):
    """No import cycle between modules of ``packages`` (a package's ``__init__`` counts as a module).

    ``known_cycles`` lists cycles being removed elsewhere, as ``"a <-> b <-> c"`` (sorted, as reported):
    they are tolerated while they exist, and the contract breaks once one is gone, so the entry is
    deleted with the cycle (like an xfail that is strict).
    """

    type_name = "acyclic_modules"
    packages = fields.ListField(subfield=fields.StringField())
    known_cycles = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        found = {" <-> ".join(c) for c in module_cycles(graph, set(self.packages))}  # type: ignore[arg-type]
        known = set(self.known_cycles or [])  # type: ignore[arg-type]
        new, gone = sorted(found - known), sorted(known - found)
        return ContractCheck(kept=not new and not gone, metadata={"new": new, "gone": gone})

    def render_broken_contract(self, check: ContractCheck) -> None:
        from importlinter.application import output

        for cycle in check.metadata["new"]:
            output.print_error(f"import cycle: {cycle}")
            output.new_line()
        for cycle in check.metadata["gone"]:
            output.print_error(f"known cycle no longer exists, delete it from known_cycles: {cycle}")
            output.new_line()
