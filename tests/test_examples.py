"""The runnable examples (DESIGN layer 5: one script per scenario) print the narrative they promise.

Each example's ``main(backend)`` is run in this process on asyncio and on trio, and each script is run
once as ``python examples/X.py`` (asyncio by default) to check the command line and the exit code.
"""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED: dict[str, str] = {
    "complete_here": r"""
opened \Device\Greeter
read 5 bytes: b'hello'
a second read: dispatch returned STATUS_SUCCESS, done=True (completed before dispatch returned)
  result: b'hello from the driver'
IOCTL_UPPER(b'quiet please') -> b'QUIET PLEASE'
unknown IOCTL failed with STATUS_INVALID_DEVICE_REQUEST
closed; the driver saw: CREATE, READ, READ, DEVICE_CONTROL, DEVICE_CONTROL, CLEANUP, CLOSE
""",
    "pend_and_complete_later": r"""
read #1: dispatch returned STATUS_PENDING; the IRP waits in the driver's queue
  device task: completing a pending read with 5 bytes
read #1 finished: b'ping!' (pending_returned=True, io_status_block=IoStatus(STATUS_SUCCESS, information=5))
read #2: dispatch returned STATUS_PENDING
read #2: the requester gives up (its cancel scope is cancelled)
  cancel routine: dequeued the IRP, completing it with STATUS_CANCELLED
read #2 came back with STATUS_CANCELLED; cancelled_caught=True
reads still queued in the driver: 0
""",
    "skip_and_pass_down": r"""
stack: Counter (stack_size 2) over RamDisk (stack_size 1)
write b'skip me' at offset 8:
  Counter: WRITE #1 at stack location 2; skipping it down by hand
  RamDisk: WRITE of 7 bytes at offset 8, at stack location 2 of 2
  -> 7 bytes written
read 7 bytes at offset 8:
  Counter: READ #1 at stack location 2; skipping it down
  RamDisk: READ of 7 bytes at offset 8, at stack location 2 of 2
  -> b'skip me'
Counter counted {'READ': 1, 'WRITE': 1}; it set no completion routine and was never called back
""",
    "forward_and_wait": r"""
write b'attack at dawn':
  Encryptor: scrambled 14 bytes, forwarding the WRITE by hand
  Encryptor: the disk returned STATUS_PENDING; waiting for the completion routine's event
  disk controller: WRITE of 14 bytes done, completing the IRP
  Encryptor: the IRP is back at location 2 (STATUS_SUCCESS); completing it again
  -> returned STATUS_SUCCESS, 14 bytes written
  on the disk: b';..;91z;.z>;-4'
read 14 bytes:
  Encryptor: forwarding the READ with airp.forward_and_wait
  disk controller: READ of 14 bytes done, completing the IRP
  Encryptor: forward_and_wait returned IoStatus(STATUS_SUCCESS, information=14)
  Encryptor: unscrambled the data; completing the IRP
  -> b'attack at dawn'
""",
    "forward_async_with_completion_routine": r"""
first read of 9 bytes at offset 4:
  CachedDisk: cache miss, marking the IRP pending
  ByteCounter: returning STATUS_PENDING unchanged
  requester: dispatch returned STATUS_PENDING
  disk controller: data is in, completing the IRP
  ByteCounter's completion routine: pending_returned=True, +9 bytes
  requester: b'quick bro', io_status_block=IoStatus(STATUS_SUCCESS, information=9), pending_returned=True
second read of 9 bytes at offset 4:
  CachedDisk: cache hit, completing at once
  ByteCounter's completion routine: pending_returned=False, +9 bytes
  ByteCounter: returning STATUS_SUCCESS unchanged
  requester: dispatch returned STATUS_SUCCESS
  requester: b'quick bro', io_status_block=IoStatus(STATUS_SUCCESS, information=9), pending_returned=False
ByteCounter counted 18 bytes
""",
}


def load_main(name: str) -> Callable[[str], None]:
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"airp_example_{name}")
    main: Callable[[str], None] = namespace["main"]
    return main


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_prints_its_narrative(name: str, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """DESIGN layer 5: each example runs on both backends and tells the same story."""
    load_main(name)(backend)
    assert capsys.readouterr().out == EXPECTED[name].lstrip("\n")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_has_a_docstring_naming_the_windows_idiom(name: str) -> None:
    """Each example explains the Windows idiom it shows and where the reference describes it."""
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"airp_example_{name}")
    doc: str = namespace["__doc__"]
    assert doc
    assert "Reference: irp-semantics.md" in doc
    assert f"python examples/{name}.py [--backend trio]" in doc


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_as_a_script_on_asyncio_by_default(name: str) -> None:
    """``python examples/X.py`` exits 0 and prints the narrative (asyncio is the default backend)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED[name].lstrip("\n")
    assert result.stderr == ""


def test_example_script_accepts_backend_trio() -> None:
    """``--backend trio`` selects trio; anything else is refused by the argument parser."""
    script = str(EXAMPLES / "complete_here.py")
    result = subprocess.run([sys.executable, script, "--backend", "trio"], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED["complete_here"].lstrip("\n")
    refused = subprocess.run([sys.executable, script, "--backend", "curio"], capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 2
    assert "invalid choice: 'curio'" in refused.stderr
