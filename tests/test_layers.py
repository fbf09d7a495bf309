"""No module imports from a higher layer, not even inside a function (docs/architecture.md lists the
layers). Every `import compmod.X` / `from compmod.X import ...` anywhere in a module's syntax tree counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "compmod"

# Bottom to top: a module may import its own layer and the layers below it.
LAYERS = (
    "errors",
    "registry",
    "files",
    "hardware",
    "distributed",
    "losses",
    "models",
    "methods",
    "config",
    "data",
    "meta",
    "regularizers",
    "eval",
    "engine",
    "report",
    "sweep",
    "reproduce",
    "transfer",
    "cli",
    "__main__",
)
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer(module: str) -> str:
    """`compmod.eval.knn` -> "eval"; `compmod.errors` -> "errors"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "compmod"


def upward_imports(source: str, module: str) -> list[str]:
    """'line: imported module' for every import in `source` (the text of `module`) of a higher layer."""
    own = RANK[layer(module)]
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("compmod.") and RANK.get(layer(name), -1) > own:
                found.append(f"{node.lineno}: {name}")
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def test_every_package_has_a_layer() -> None:
    packages = {layer(m) for m, _ in _modules()} - {"compmod"}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_no_module_imports_a_higher_layer(module: str, path: Path) -> None:
    if layer(module) == "compmod":  # the package's own __init__: the version only
        return
    assert upward_imports(path.read_text(), module) == []


def test_the_check_finds_an_upward_import_even_inside_a_function() -> None:
    source = "import torch\n\n\ndef f():\n    from compmod.engine.builders import build_method\n"
    assert upward_imports(source, "compmod.eval.protocol") == ["5: compmod.engine.builders"]
    assert upward_imports("from compmod.data.build import build_dataset\n", "compmod.eval.protocol") == []
    # the three that this test replaced, as they were
    assert upward_imports("from compmod.data.presets import x\n", "compmod.config.load") == [
        "1: compmod.data.presets"
    ]
    assert upward_imports("from compmod.regularizers.fusion import fuse\n", "compmod.meta.hypergrad") != []
