"""Imports go one way: dashboard -> chat -> model domain -> inference.

``chatsite/`` wires the layers and may import any of them; none of them
imports ``chatsite``. The one module of the inference layer that reaches
up is the worker's wiring, which hands Django-backed callbacks to a worker
that otherwise knows nothing of the apps. Lazy imports inside functions
count like any other.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower number, lower layer: a module may import its own layer or lower.
LAYERS = {"inference": 0, "domain": 1, "chat": 2, "dashboard": 3}
WIRING = {"inference.worker.wiring"}


def _layer(module: str) -> str | None:
    top = module.split(".", 1)[0]
    if top == "models_admin":
        if module == "models_admin.dashboard" or module.startswith("models_admin.dashboard."):
            return "dashboard"
        return "domain"
    if top in ("chat", "inference"):
        return top
    if top == "chatsite":
        return "chatsite"
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            # "from models_admin import dashboard" reaches another layer
            # through the name it imports.
            for alias in node.names:
                if _layer(f"{target}.{alias.name}") != _layer(target):
                    names.add(f"{target}.{alias.name}")
    return names


def _app_modules() -> list[Path]:
    paths: list[Path] = []
    for app in ("chat", "models_admin", "inference"):
        paths.extend(p for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts)
    return sorted(paths)


def _climbs(module: str, tree: ast.AST, is_package: bool) -> list[str]:
    """Return the imports of module that reach a higher layer or the wiring."""
    own = _layer(module)
    assert own in LAYERS, module
    found = []
    for target in sorted(_imported(tree, module, is_package)):
        other = _layer(target)
        if other is None or other == own:
            continue
        if other == "chatsite":
            found.append(f"{module} imports {target} (the wiring)")
        elif LAYERS[other] > LAYERS[own] and module not in WIRING:
            found.append(f"{module} ({own}) imports {target} ({other})")
    return found


def _violations() -> list[str]:
    found = []
    for path in _app_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found.extend(_climbs(_module_name(path), tree, path.name == "__init__.py"))
    return found


def test_no_layer_imports_a_higher_one() -> None:
    """Every app module imports only its own layer or lower ones."""
    assert _violations() == []


def test_the_worker_wiring_is_the_inference_layers_one_way_up() -> None:
    """The exception names a module that exists, so it cannot go stale."""
    for module in WIRING:
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").is_file(), module


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "inference.engine",
            "from chat.models import Message",
            "inference.engine (inference) imports chat.models (chat)",
        ),
        (
            "models_admin.services.training",
            "from models_admin import dashboard",
            "models_admin.services.training (domain) imports models_admin.dashboard (dashboard)",
        ),
        (
            "chat.services.messages",
            "def f():\n    import chatsite.proxies",
            "chat.services.messages imports chatsite.proxies (the wiring)",
        ),
    ],
)
def test_the_check_sees_an_import_that_climbs(module: str, source: str, expected: str) -> None:
    """A climbing import, even a lazy one, is reported by module and layer."""
    assert _climbs(module, ast.parse(source), is_package=False) == [expected]
