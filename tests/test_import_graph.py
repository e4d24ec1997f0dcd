"""The packages import one way: no module of ours imports, directly or through others, a
module that imports it back. Every import counts, wherever it stands (module level, inside a
function, under ``TYPE_CHECKING``): a lazy import only hides a cycle from the interpreter, not
from the reader. (The one-way rule between domain packages comes with the layout move, issue 11.)
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trading_pipeline", "trading_api")

def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, module: str, level: int, is_pkg: bool) -> str:
    if not level:
        return name
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", mod, node.level, is_pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
        graph.setdefault(mod, set())
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (each line: modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_checker_sees_a_cycle() -> None:
    """The contract could fail: a two-module loop and a three-module loop are both found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert find_cycles(graph) == [["a", "b"], ["c", "d", "e"]]


SHARED = {"settings", "logs"}
DOMAINS: dict[str, set[str]] = {  # domain -> the other domains it may import
    "marketdata": set(),
    "scans": {"marketdata"},
    "trading": {"marketdata"},
    "serving": {"marketdata"},
    "backtest": {"marketdata", "scans", "trading"},
}


def _part(module: str) -> str:
    """``marketdata`` for trading_pipeline.marketdata.x, ``settings``, ``defs``, ``trading_api``."""
    parts = module.split(".")
    if parts[0] != "trading_pipeline":
        return parts[0]
    return parts[1] if len(parts) > 1 else "trading_pipeline"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, targets in sorted(graph.items()):
        src = _part(mod)
        for target in sorted(targets):
            dst = _part(target)
            if dst == src or dst in SHARED:
                continue
            if src in DOMAINS and dst not in DOMAINS[src]:
                out.append(f"{mod} -> {target} (domain {src} may import {sorted(DOMAINS[src] | SHARED)})")
            elif src in SHARED:
                out.append(f"{mod} -> {target} (a shared module imports nothing else of ours)")
    return out


def test_domains_import_one_way() -> None:
    graph = import_graph()
    assert set(DOMAINS) <= {_part(m) for m in graph}, "a domain package is missing: update DOMAINS"
    bad = layer_violations(graph)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_checker_sees_a_layer_violation() -> None:
    graph = {
        "trading_pipeline.marketdata.ingest": {"trading_pipeline.trading.orders", "trading_pipeline.settings"},
        "trading_pipeline.trading.orders": {"trading_pipeline.marketdata.bars", "trading_pipeline.defs.orders"},
        "trading_pipeline.settings": {"trading_pipeline.marketdata.bars"},
        "trading_pipeline.defs.orders": {"trading_pipeline.trading.orders", "trading_api.deps"},
    }
    assert [v.split(" (")[0] for v in layer_violations(graph)] == [
        "trading_pipeline.marketdata.ingest -> trading_pipeline.trading.orders",
        "trading_pipeline.settings -> trading_pipeline.marketdata.bars",
        "trading_pipeline.trading.orders -> trading_pipeline.defs.orders",
    ]
