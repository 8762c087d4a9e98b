"""`twins.weights` is file I/O: it never imports `twins.models` (models -> weights is the one
direction; building a model from weights is `twins.models.from_weights`)."""

import ast
from pathlib import Path

import twins.weights

WEIGHTS = Path(twins.weights.__file__).parent


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_weights_module_imports_the_models():
    offenders = {
        path.name: sorted(n for n in _imported(path) if n.startswith("twins.models"))
        for path in WEIGHTS.glob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
