"""The package's layers import only downwards, and no import hides inside a function.

foundation (phonemes, text, lexicon, metrics, atomic) -> data, sim -> models -> decoding
-> runtime -> training | evaluation -> streaming. Tests, scripts and benchmarks may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mode_ssm"

# what each layer may not import (by mode_ssm subpackage or module name)
FORBIDDEN = {
    "foundation": {"data", "sim", "models", "decoding", "runtime", "training", "evaluation", "streaming"},
    "data": {"sim", "models", "decoding", "runtime", "training", "evaluation", "streaming"},
    "sim": {"models", "decoding", "runtime", "training", "evaluation", "streaming"},
    "models": {"decoding", "runtime", "training", "evaluation", "sim", "streaming"},
    "decoding": {"models", "runtime", "training", "evaluation", "sim", "streaming"},
    "runtime": {"training", "evaluation", "sim", "streaming"},
    "evaluation": {"training", "streaming"},  # side by side: what both need lives in runtime/
    "training": {"evaluation", "streaming"},
    "streaming": {"training", "sim"},  # live decoding sits on top of evaluation's loading and search
}
# sim writes T15 files with the data layer's writer; only training (the default data on demand) imports sim


def layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else "foundation"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_packages(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, mode_ssm subpackage or module imported, whether the import sits inside a function)."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                out.append((child.lineno, "<relative import>", in_function))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + ([f"{child.module}.{a.name}" for a in child.names]
                                          if child.module == "mode_ssm" else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "mode_ssm" and len(parts) > 1:
                    out.append((child.lineno, parts[1], in_function))
            visit(child, inside)

    visit(tree, False)
    return out


def test_every_module_is_checked():
    layers = {layer_of(p) for p in modules()}
    assert layers <= set(FORBIDDEN), f"a package with no layer rule: {sorted(layers - set(FORBIDDEN))}"
    assert {"foundation", "data", "models", "decoding", "runtime", "training", "evaluation"} <= layers


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_sit_at_module_level(path):
    layer = layer_of(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for line, target, in_function in imported_packages(tree):
        assert target != "<relative import>", f"{path}:{line}: a relative import (the layers are checked by name)"
        target_layer = target if (PACKAGE / target).is_dir() else "foundation"
        assert target_layer not in FORBIDDEN[layer], f"{path}:{line}: {layer} imports mode_ssm.{target}"
        assert not in_function, f"{path}:{line}: import of mode_ssm.{target} hidden inside a function"


def test_the_checker_sees_a_violation():
    tree = ast.parse("def f():\n    from mode_ssm.training.trainer import train\nfrom mode_ssm.models import build\n"
                     "from .x import y\n")
    assert imported_packages(tree) == [(2, "training", True), (3, "models", False), (4, "<relative import>", False)]
