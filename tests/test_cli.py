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
    traced = await run_demo(lines.append, latency=0)
    text = "\n".join(lines)
    # 11 I/O requests narrated, the create, the read in flight at the removal and the one after it,
    # cleanup and close, and 10 PnP requests (starts, enumerations, surprise removal, removals).
    assert traced == 26
    assert "result: b'hello, IRP'" in text
    assert "failed with STATUS_END_OF_FILE" in text
    assert "failed with STATUS_BUFFER_OVERFLOW, data b'AIRP'" in text
    assert "result: b'AIRP-0001'" in text  # GET_SERIAL answered by the bus's child PDO
    assert "dispatch routines returned: STATUS_PENDING, STATUS_PENDING, STATUS_PENDING" in text
    assert "toaster returns STATUS_PENDING (pended: the IRP is still in flight)" in text
    assert "result: b'hello, IRP\\x00\\x00\\x00\\x00\\x00\\x00AAAABBBBCCCC'" in text
    # The lifecycle part: started by the PnP manager, surprise-removed under a read, removed at the close.
    assert "\\Device\\Toaster0 is now started" in text
    assert "the read came back with STATUS_NO_SUCH_DEVICE" in text
    assert "\\Device\\Toaster0 is surprise removed" in text
    assert "A new read fails at once with STATUS_NO_SUCH_DEVICE." in text
    assert "\\Device\\Toaster0 is removed." in text
    assert "the audit filter saw 13 results" in text


def test_driver_plugins_are_discovered_through_entry_points() -> None:
    names = set(airp.available_drivers())
    assert {"ramdisk", "audit-filter", "pass-through-filter", "demo-bus", "toaster", "toaster-bus"} <= names
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
    assert "26 IRPs traced" in done.stdout
