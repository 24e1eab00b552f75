"""The CLI and the server reach a sub-package only through its API (its `__init__`, which lists it in `__all__`) and
import no private name from any personactl module, so the packages' internals can move without touching them."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(importlib.util.find_spec("personactl").submodule_search_locations[0])
INTERFACES = ("cli", "server")
API_PACKAGES = ("bench", "blackbox", "judges", "lora", "portable", "safety", "scaleout", "server", "transfer")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def declared_api(package: str) -> set[str]:
    """The names in `personactl.<package>.__all__`, read from the source (nothing is imported)."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def is_module(package: str, name: str) -> bool:
    folder = ROOT.parent.joinpath(*package.split("."))
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def absolute_target(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def reaches_inside(target: str, own: str) -> str | None:
    """The package whose modules `target` reaches into, if it is one the interfaces must use through its API."""
    parts = target.split(".")
    if len(parts) > 2 and parts[0] == "personactl" and parts[1] in API_PACKAGES and parts[1] != own:
        return parts[1]
    return None


def violations(source: str, importer: str, is_package: bool = False) -> list[str]:
    """Each import of `source` (module `importer`) that breaks the rule, as 'line N: what'."""
    own = importer.split(".")[1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if package := reaches_inside(alias.name, own):
                    found.append(f"line {node.lineno}: imports {alias.name}; import from personactl.{package} instead")
        if not isinstance(node, ast.ImportFrom):
            continue
        target = absolute_target(node, importer, is_package)
        if target.split(".")[0] != "personactl":
            continue
        names = [alias.name for alias in node.names]
        if package := reaches_inside(target, own):
            found.append(f"line {node.lineno}: imports {', '.join(names)} from {target}; import them from personactl.{package} instead")
        elif target.count(".") == 1 and (package := target.split(".")[1]) in API_PACKAGES and package != own:
            missing = sorted(set(names) - declared_api(package))
            if missing:
                found.append(f"line {node.lineno}: {', '.join(missing)} not in personactl.{package}.__all__")
        for name in names:
            private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            if private and not is_module(target, name):  # a module such as _common or _io is not a private name
                found.append(f"line {node.lineno}: imports the private name {name} from {target}")
    return found


INTERFACE_FILES = sorted(path for package in INTERFACES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", INTERFACE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_interfaces_import_sub_packages_only_through_their_api(path):
    found = violations(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")
    assert not found, "\n".join(f"{path.relative_to(ROOT.parent)}: {v}" for v in found)


def test_the_check_finds_a_module_import_a_name_outside_all_and_a_private_name():
    source = (
        "from ..lora.adapters import read_card\n"
        "import personactl.transfer.pairs\n"
        "from ..safety import not_in_the_api\n"
        "from ..extraction import _private\n"
        "from ._common import _helper\n"
        "from . import _common\n"
        "from .. import _io\n"
        "from .engine import Engine\n"
    )
    found = violations(source, "personactl.cli.example")
    assert [v.split(":")[0] for v in found] == ["line 1", "line 2", "line 3", "line 4", "line 5"]
    assert "personactl.lora instead" in found[0] and "not_in_the_api" in found[2] and "_private" in found[3]


def test_a_server_module_may_import_its_own_package_modules_but_the_cli_may_not():
    source = "from .engine import Engine\nfrom ..server.engine import Job\n"
    assert violations(source, "personactl.server.app") == []
    assert len(violations("from ..server.engine import Job\n", "personactl.cli.serving")) == 1


def api_order(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's isort-style order for __all__)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("package", API_PACKAGES)
def test_every_name_in_a_package_api_exists_and_the_list_is_sorted(package):
    module = importlib.import_module(f"personactl.{package}")
    api = module.__all__
    assert [name for name in api if not hasattr(module, name)] == []
    assert api == sorted(set(api), key=api_order)
