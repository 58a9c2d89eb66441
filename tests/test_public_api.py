"""The public surface: re-exports, private modules, typing marker, and the sans-I/O rule (DESIGN "Layers"
and "Rules")."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import airp

PACKAGE_DIR = Path(airp.__file__).parent
PROJECT_DIR = PACKAGE_DIR.parent
#: Documented public submodules (DESIGN layer 4: ``airp.testing``), plus ``python -m airp``.
PUBLIC_SUBMODULES = {"__init__", "__main__", "testing"}
#: The sans-I/O machine (DESIGN layer 1) named by the issue.
SANS_IO_MODULES = ["airp._machine._irp", "airp._machine._completion", "airp._machine._status", "airp._machine._codes", "airp._machine._bugcheck"]
ASYNC_LIBRARIES = {"anyio", "trio", "sniffio", "asyncio"}


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


def run_python(code: str) -> list[str]:
    """Run *code* in a fresh interpreter; it prints a JSON list of module names."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


CHECK_LOADED = f"""
import json, sys
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {sorted(ASYNC_LIBRARIES)!r})))
"""


def test_sans_io_modules_import_no_event_loop_library() -> None:
    """DESIGN layer 1: the IRP machine imports no anyio.  Checked module by module: the package's
    ``__init__`` is replaced by an empty package so only these modules' own imports count, and a
    request is completed through them to show they work alone."""
    code = f"""
import importlib.util, sys, types
spec = importlib.util.find_spec("airp")
package = types.ModuleType("airp")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["airp"] = package
import {", ".join(SANS_IO_MODULES)}, airp._machine._cancel
from airp._machine._irp import Irp
from airp._machine._completion import complete_request
from airp._machine._status import STATUS_SUCCESS, STATUS_CONTINUE_COMPLETION
irp = Irp(2)
irp.set_completion_routine(lambda device, irp, context: STATUS_CONTINUE_COMPLETION)
irp.set_next_stack_location()
irp.set_next_stack_location()
irp.mark_pending()
complete_request(irp, STATUS_SUCCESS, 1)
assert irp.completed and irp.pending_returned
{CHECK_LOADED}"""
    assert run_python(code) == []


