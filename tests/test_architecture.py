"""The architecture page's rules, read from the import graph of the source (docs/architecture.md,
"The one rule of dependencies"): arrows point one way, no import cycles (a cycle hidden behind
an import inside a function counts), and every public function says the types it takes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tts

PACKAGE = Path(tts.__file__).resolve().parent

# Modules every layer may import: they import nothing of tts but each other.
FOUNDATION = {"tts", "tts.errors", "tts.devices", "tts.batching", "tts.prompts", "tts.seeds"}

# layer -> the layers it may import, besides itself and the foundation. `tts.models` names the
# model folders (the built-in ones, tiny test ones) that the engine and the verifiers load.
ALLOWED = {
    "models": set(),
    "engine": {"models"},
    "verifiers": {"models"},
    "search": {"engine", "verifiers", "models"},
    "data": {"search", "engine", "verifiers", "models"},
    "bench": {"data", "search", "engine", "verifiers", "models"},
    "train": {"data", "search", "engine", "verifiers", "models"},
    "servers": {"search", "engine", "verifiers", "models"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The tts modules `path` imports anywhere in its body (inside functions too; not under
    `if TYPE_CHECKING:`, which never runs). `from tts.x import y` counts as importing `tts.x.y`
    when that is a module, else `tts.x`."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n) for block in ast.walk(tree) if is_type_checking_block(block) for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tts")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not (node.module == "tts" or node.module.startswith("tts.")):
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found & modules


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_arrows_point_one_way(graph: dict[str, set[str]]) -> None:
    wrong = []
    for module, imported in sorted(graph.items()):
        if module in FOUNDATION:
            wrong += [f"{module} -> {i}" for i in sorted(imported - FOUNDATION)]
            continue
        own = layer(module)
        if own is None:  # the CLI and its commands sit on top and may import anything
            continue
        allowed = ALLOWED[own] | {own}
        wrong += [
            f"{module} -> {i}"
            for i in sorted(imported)
            if i not in FOUNDATION and layer(i) not in allowed
        ]
    assert not wrong, "imports against the dependency rule:\n" + "\n".join(wrong)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(" -> ".join(stack[stack.index(imported) :] + [imported]))
            elif imported not in state:
                visit(imported, [*stack, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_public_functions_are_annotated() -> None:
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.name.startswith("_"):
                continue
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            arguments += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            untyped = [
                a.arg for a in arguments if a.annotation is None and a.arg not in ("self", "cls")
            ]
            if untyped:
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                missing.append(f"{where} {node.name}({', '.join(untyped)})")
    assert not missing, "public parameters without a type:\n" + "\n".join(missing)
