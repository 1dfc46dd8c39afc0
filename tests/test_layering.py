"""The folders show the layering, and the imports keep to it.

``wallet/`` (the core) imports none of the others; ``sync/`` (the protocol and its
transports) builds on ``wallet/`` only; ``server/`` (the relay) on ``wallet/`` and
``sync/``; the faces in ``tui/`` on any of them. Every import is read from the source,
those inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "wallet": {"wallet"},
    "sync": {"wallet", "sync"},
    "server": {"wallet", "sync", "server"},
    "tui": {"wallet", "sync", "server", "tui"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package of ours, line) of every import in one module."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out.update((n.split(".")[0], node.lineno) for n in names
                   if n.split(".")[0] in ALLOWED)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = [f"{p.relative_to(ROOT)}:{line} imports {top}"
             for p in sorted((ROOT / package).rglob("*.py"))
             for top, line in sorted(imported_packages(p)) if top not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)
