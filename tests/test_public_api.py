"""The public surface: re-exports, private modules and the typing marker (DESIGN "Rules").

The sans-I/O rule (DESIGN "Layers") is checked by test_sans_io.py and test_layering.py."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import inspect
import re
from pathlib import Path

import pytest

import airp

PACKAGE_DIR = Path(airp.__file__).parent
PROJECT_DIR = PACKAGE_DIR.parent
#: Documented public submodules (DESIGN layer 4: ``airp.testing``), plus ``python -m airp``.
PUBLIC_SUBMODULES = {"__init__", "__main__", "testing"}


def reexports() -> list[tuple[str, str, str]]:
    """(module, name, asname) for every ``from .module import name as asname`` in airp/__init__.py."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                found.append((("." * node.level) + (node.module or ""), alias.name, alias.asname or alias.name))
    return found


REEXPORTS = reexports()


def test_init_reexports_something() -> None:
    """DESIGN: the documented public API is re-exported from airp/__init__.py."""
    assert len(REEXPORTS) > 50
    names = {asname for _, _, asname in REEXPORTS}
    for core in ("Irp", "complete_request", "call_driver", "IoManager", "BugCheck", "NtStatus", "IrpMonitor"):
        assert core in names


@pytest.mark.parametrize(("module", "name", "asname"), REEXPORTS, ids=[asname for _, _, asname in REEXPORTS])
def test_every_reexported_name_is_importable_from_airp(module: str, name: str, asname: str) -> None:
    """DESIGN: ``from airp import X`` works for every name __init__ re-exports, in the explicit
    ``from ._module import X as X`` form (trio style), from a private module."""
    assert module.startswith("._"), f"{asname} is re-exported from {module!r}, not from a private module"
    assert asname == name, f"re-export {name} as {asname}: use the explicit 'X as X' form"
    namespace: dict[str, object] = {}
    exec(f"from airp import {asname}", namespace)
    assert namespace[asname] is getattr(airp, asname)


@pytest.mark.parametrize(("module", "name", "asname"), REEXPORTS, ids=[asname for _, _, asname in REEXPORTS])
def test_public_classes_and_functions_are_documented(module: str, name: str, asname: str) -> None:
    """DESIGN: a typed, documented public API."""
    obj = getattr(airp, asname)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), f"airp.{asname} has no docstring"


def test_private_modules_are_underscored() -> None:
    """DESIGN: private modules are underscore-prefixed; only documented submodules are public."""
    entries = {p.stem for p in PACKAGE_DIR.rglob("*.py")} | {
        p.name for p in PACKAGE_DIR.rglob("*") if p.is_dir() and (p / "__init__.py").exists()
    }
    public = {name for name in entries if not name.startswith("_")} | (entries & {"__init__", "__main__"})
    assert public <= PUBLIC_SUBMODULES, f"public modules not documented as such: {sorted(public - PUBLIC_SUBMODULES)}"
    assert "_irp" in entries


def test_package_ships_py_typed() -> None:
    """DESIGN: typed (``py.typed``), installed as package data."""
    assert importlib.resources.files("airp").joinpath("py.typed").is_file()
    pyproject = (PROJECT_DIR / "pyproject.toml").read_text()  # tomllib is 3.11+, airp supports 3.10
    assert re.search(r'\[tool\.setuptools\.package-data\]\s*airp\s*=\s*\[[^\]]*"py\.typed"', pyproject)


def test_version_matches_the_distribution() -> None:
    """The version in airp.__version__ is the installed distribution's."""
    assert airp.__version__ == importlib.metadata.version("airp")


