"""The command line and the demo: the README's first command must keep working."""

from __future__ import annotations

import subprocess
import sys

import pytest

import airp
from airp._tools._cli import main
from airp._tools._demo import run_demo


@pytest.mark.anyio
async def test_demo_narrates_every_request() -> None:
    lines: list[str] = []
    traced = await run_demo(lines.append, write_latency=0)
    text = "\n".join(lines)
    assert traced == 14
    assert "result: b'hello, IRP'" in text
    assert "failed with STATUS_END_OF_FILE" in text
    assert "failed with STATUS_BUFFER_OVERFLOW, data b'AIRP'" in text
    assert "dispatch routines returned: STATUS_PENDING, STATUS_PENDING, STATUS_PENDING" in text
    assert "ramdisk returns STATUS_PENDING (pended: the IRP is still in flight)" in text
    assert "the audit filter saw 11 results" in text


def test_driver_plugins_are_discovered_through_entry_points() -> None:
    names = set(airp.available_drivers())
    assert {"ramdisk", "audit-filter", "pass-through-filter", "demo-bus"} <= names
    ramdisk_class = airp.load_driver("ramdisk")
    assert issubclass(ramdisk_class, airp.Driver)


def test_unknown_driver_plugin_names_the_available_ones() -> None:
    with pytest.raises(LookupError, match=r"no airp driver plugin named 'nope' \(available: .*ramdisk"):
        airp.load_driver("nope")


def test_cli_lists_drivers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drivers"]) == 0
    assert "airp_drivers.ramdisk:RamDisk" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_airp_demo_command_runs(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airp", "demo", "--backend", backend], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "14 IRPs traced" in done.stdout
