"""No new ``Any`` in public signatures: a budget over the source (parsed with ``ast``, nothing
imported) of clef_core, client, server and simulations.

Two counts, each held at or below a recorded baseline:
* public functions and methods (name without a leading ``_``, in a class without one; ``__init__``
  and ``__call__`` count: they are a class's public signature) with ``Any`` anywhere in a
  parameter or return annotation;
* parameters that carry the experiment as an untyped dict (``cfg`` / ``experiment`` annotated
  ``dict[...]``, ``Mapping[...]`` or ``MutableMapping[...]``): issue 21 replaces them with the
  typed sections.
When a change lowers a count, lower its baseline here in the same commit (the test prints the
new figure), so that the budget only ever tightens.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("clef_core", "client", "server", "simulations")
# Baselines: lower them, never raise them. 184 / 51 before issue 21 (2026-12-07); raised once to
# 185 / 52 on merging its parts c and d (clef_core/run_folder.py's JSON lines; evaluate_checkpoint's
# cfg dict moved out of the CLI, which is not counted); 154 / 0 after parts a and b (the typed
# Experiment: no experiment-dict parameter is left).
ANY_BASELINE = 154              # of 667 public functions and methods (2026-12-07)
EXPERIMENT_DICT_BASELINE = 0    # `cfg: dict[str, Any]` / `cfg: Mapping[str, Any]` parameters
EXPERIMENT_NAMES = ("cfg", "experiment")
PUBLIC_DUNDERS = ("__init__", "__call__")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _expr(node: ast.expr | None) -> ast.expr | None:
    """An annotation as an expression (a quoted annotation is parsed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return ast.parse(node.value, mode="eval").body
    return node


def annotations(fn: Function) -> Iterator[tuple[str, ast.expr | None]]:
    """(parameter name, annotation) of every parameter, then ("return", the return annotation)."""
    a = fn.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
        yield arg.arg, _expr(arg.annotation)
    yield "return", _expr(fn.returns)


def mentions_any(node: ast.expr | None) -> bool:
    return node is not None and any((isinstance(n, ast.Name) and n.id == "Any")
                                    or (isinstance(n, ast.Attribute) and n.attr == "Any") for n in ast.walk(node))


def public_functions(tree: ast.Module) -> Iterator[Function]:
    """Module-level functions and methods of public classes (nested functions are not API)."""
    def visit(body: list[ast.stmt]) -> Iterator[Function]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_") or node.name in PUBLIC_DUNDERS:
                    yield node
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                yield from visit(node.body)
            elif isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:`, optional imports
                yield from visit(node.body)
    return visit(tree.body)


def budget(source: str, where: str = "<source>") -> tuple[int, list[str], list[str]]:
    """(public functions, those with ``Any`` in their signature, experiment-dict parameters)."""
    total, with_any, experiment_dicts = 0, [], []
    for fn in public_functions(ast.parse(source)):
        total += 1
        annotated = list(annotations(fn))
        if any(mentions_any(node) for _, node in annotated):
            with_any.append(f"{where}:{fn.lineno} {fn.name}")
        for name, node in annotated:
            if name in EXPERIMENT_NAMES and node is not None \
                    and ast.unparse(node).startswith(("dict", "Mapping", "MutableMapping")):
                experiment_dicts.append(f"{where}:{fn.lineno} {fn.name}({name}: {ast.unparse(node)})")
    return total, with_any, experiment_dicts


def tree_budget() -> tuple[int, list[str], list[str]]:
    total, with_any, experiment_dicts = 0, [], []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            n, a, e = budget(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
            total, with_any, experiment_dicts = total + n, with_any + a, experiment_dicts + e
    return total, with_any, experiment_dicts


def test_the_counter_sees_any_where_it_hides() -> None:
    source = '''
from typing import Any, Mapping
import typing

def plain(x: int) -> int: ...
def in_return(x: int) -> dict[str, Any]: ...
def quoted(x: "list[Any]") -> None: ...
def dotted(*args: typing.Any) -> None: ...
def run(cfg: Mapping[str, Any], experiment: dict) -> None: ...
def _private(x: Any) -> Any: ...
class Public:
    def __init__(self, cfg: dict[str, Any]) -> None: ...
    def __repr__(self) -> Any: ...
    def method(self, conf: Mapping[str, Any]) -> None:
        def nested(y: Any) -> None: ...
class _Hidden:
    def method(self, x: Any) -> None: ...
'''
    total, with_any, experiment_dicts = budget(source)
    assert total == 7  # plain, in_return, quoted, dotted, run, Public.__init__, Public.method
    assert [entry.split()[1] for entry in with_any] == ["in_return", "quoted", "dotted", "run", "__init__", "method"]
    assert [entry.split()[1] for entry in experiment_dicts] == [
        "run(cfg:", "run(experiment:", "__init__(cfg:"]


def test_no_new_any_in_public_signatures() -> None:
    total, with_any, _ = tree_budget()
    assert len(with_any) <= ANY_BASELINE, (
        f"{len(with_any)} of {total} public functions have Any in their signature (baseline {ANY_BASELINE}): "
        "type the new one (a dataclass, a TypedDict, a Protocol)\n" + "\n".join(with_any))


def test_no_new_experiment_dict_parameters() -> None:
    _, _, experiment_dicts = tree_budget()
    assert len(experiment_dicts) <= EXPERIMENT_DICT_BASELINE, (
        f"{len(experiment_dicts)} parameters take the experiment as a dict (baseline {EXPERIMENT_DICT_BASELINE}): "
        "take the typed section instead\n" + "\n".join(experiment_dicts))
