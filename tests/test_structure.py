"""Which part may know which (the architecture's rules, as a test over every import statement,
module level or inside a function): no package imports a package it must not know (but every
package may import the device's numpy-only quality rule), clef_core never imports Flower, the device runtime needs only numpy and a TFLite (or ONNX) interpreter, and no
module imports itself back through others."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("clef", "clef_core", "client", "server", "simulations", "edge", "deploy")
ALLOWED = {  # package -> the project packages it may import
    "clef_core": set(),
    "client": {"clef_core"},
    "server": {"clef_core"},
    "simulations": {"clef_core", "client", "server"},
    "edge": {"clef_core"},
    "deploy": {"clef_core"},
    "clef": set(PACKAGES),
}
# The one numpy-only module every side may import: the per-window signal-quality rule lives with
# the device runtime (which must be copyable alone) and the training store runs the same code.
SHARED_WITH_DEVICE = {"edge.runtime.quality"}
DEVICE_RUNTIME_MAY_IMPORT = {"numpy", "tflite_runtime", "ai_edge_litert", "onnxruntime", "edge"}  # one interpreter


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module ``path`` imports; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found |= subs or {node.module}
    return found


def test_packages_import_only_what_they_may_know() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        own = name.split(".")[0]
        for dep in imports(path, known):
            top = dep.split(".")[0]
            if top in PACKAGES and top != own and top not in ALLOWED[own] and dep not in SHARED_WITH_DEVICE:
                wrong.append(f"{name} imports {dep}")
            if own == "clef_core" and top in ("flwr", "flwr_datasets"):
                wrong.append(f"{name} imports {dep}: clef_core never knows Flower")
            if name.startswith("edge.runtime") and top not in DEVICE_RUNTIME_MAY_IMPORT | set(sys.stdlib_module_names):
                wrong.append(f"{name} imports {dep}: the device runtime needs only numpy and a TFLite interpreter")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: {d for d in imports(path, known) if d in known and d != name} for name, path in known.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles
