"""Packaging: what an installed airp gives other projects (README, "Two commands").

A downstream project type-checks against the installed airp with ``mypy --strict``: this works
for a wheel, and for the README's editable install only because pyproject.toml asks setuptools
for its *strict* editable mode (a link tree on a plain ``.pth`` path).  The default, lenient mode
serves a flat layout through an import hook that type checkers cannot follow, and mypy then says
``Cannot find implementation or library stub for module named "airp"``.

The type-checking test takes a few seconds (mypy reads airp and anyio without a cache), so it is
marked ``slow``: deselect it with ``-m "not slow"``; it runs by default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import airp

PACKAGE_DIR = Path(airp.__file__).parent
PROJECT_DIR = PACKAGE_DIR.parent

DOWNSTREAM = '''
"""A downstream project: its own driver, an I/O manager, a read."""

from __future__ import annotations

import anyio

import airp
from airp import IrpMajor, complete_request


class Zeros(airp.Driver):
    """Answers every read with zeros."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        length: int = irp.current_stack_location.parameters.length
        buffer = irp.system_buffer
        assert buffer is not None
        buffer[:length] = bytes(length)
        complete_request(irp, airp.STATUS_SUCCESS, length)
        return airp.STATUS_SUCCESS


async def main() -> bytes:
    io = airp.IoManager()
    io.create_device(Zeros(), r"\\Device\\Zeros", flags=airp.DeviceFlags.BUFFERED_IO)
    async with io.open(r"\\Device\\Zeros") as handle:
        data: bytes = await handle.read(4)
        request = await handle.read_overlapped(2)
        status: airp.IoStatus = await request.irp
        assert status.information == 2
    return data


if __name__ == "__main__":
    print(anyio.run(main).hex())
'''

#: Proof that mypy reads airp's real annotations (not Any): this must fail to type-check.
WRONG = '''
import airp

airp.complete_request("not an IRP", airp.STATUS_SUCCESS, 0)
'''


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_a_downstream_project_type_checks_against_the_installed_airp(tmp_path: Path) -> None:
    """``mypy --strict`` on a project that imports the installed airp finds airp's real files."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "downstream"\nversion = "0"\n\n[tool.mypy]\nstrict = true\n')
    (tmp_path / "downstream.py").write_text(textwrap.dedent(DOWNSTREAM))
    (tmp_path / "wrong.py").write_text(WRONG)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache")]

    result = run([*mypy, "downstream.py"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout

    result = run([*mypy, "wrong.py"], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"complete_request" has incompatible type "str"; expected "Irp"' in result.stdout, result.stdout

    result = run([sys.executable, "downstream.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "00000000"


def test_pyproject_lists_every_package() -> None:
    """The wheel ships every subpackage: pyproject's explicit package list names them all."""
    pyproject = (PROJECT_DIR / "pyproject.toml").read_text()  # tomllib is 3.11+, airp supports 3.10
    match = re.search(r"^packages = \[([^\]]*)\]", pyproject, re.MULTILINE)
    assert match is not None
    listed = set(re.findall(r'"([^"]+)"', match.group(1)))
    on_disk = {
        ".".join(path.parent.relative_to(PROJECT_DIR).parts) for path in PACKAGE_DIR.rglob("__init__.py")
    } | {"airp_drivers"}
    assert listed == on_disk
    assert re.search(r'package-dir = \{ "airp_drivers" = "drivers/airp_drivers" \}', pyproject)
    assert (PROJECT_DIR / "drivers" / "airp_drivers" / "__init__.py").is_file()

