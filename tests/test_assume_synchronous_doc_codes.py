"""docs/testing.md, "A driver that assumes synchronous completion": which bug check to expect when.

The page's buggy ``Checksum`` filter (run as the page writes it) stops with 0xC9 / 0x06 over the
page's disk, which completes at once, but only under forced pending; over a disk that pends, the
same bug is 0xC9 / 0x307 with the verifier on (forced pending or not), and 0xC9 / 0x226 without
it.  The page says so; this checks that it is true, on both backends.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest

import airp
from airp import BugCheck, IrpMajor, VerifierCode

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def page_example() -> dict[str, Any]:
    """The page's first two blocks (the disk and the stack; the buggy filter), executed."""
    text = DOCS.read_text()
    section = text[text.index("### A driver that assumes synchronous completion") :]
    blocks = [block.split("```")[0] for block in section.split("```python\n")[1:]]
    namespace: dict[str, Any] = {"__name__": "testing_md_example"}
    exec(blocks[0] + blocks[1], namespace)  # the documentation's own code, as written
    return namespace


class PendingDisk(airp.Driver):
    """The page's disk, except that it pends each read and completes it a second later."""

    def __init__(self, group: anyio.abc.TaskGroup) -> None:
        super().__init__("pending-disk")
        self.group = group

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
    async def io(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        if irp.current_stack_location.major != IrpMajor.READ:
            airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
            return airp.STATUS_SUCCESS
        irp.mark_pending()
        self.group.start_soon(self.finish, irp)
        return airp.STATUS_PENDING

    async def finish(self, irp: airp.Irp) -> None:
        await anyio.sleep(1)
        assert irp.system_buffer is not None
        irp.system_buffer[:4] = b"data"
        airp.complete_request(irp, airp.STATUS_SUCCESS, 4)


async def read_with(disk: airp.Driver | None, verifier: airp.Verifier | None) -> BaseException | bytes:
    example = page_example()
    airp.set_cancel_wait_limit(5)  # a read the buggy filter still holds is let go at the close
    with contextlib.ExitStack() as stack:
        if verifier is not None:
            # The verifier's bug check leaves the read with the filter (the page says so too).
            stack.enter_context(pytest.warns(airp.DriverCancelTimeoutWarning))
        async with anyio.create_task_group() as group:
            io = airp.IoManager(verifier=verifier)
            lower = io.create_device(
                disk if disk is not None else PendingDisk(group), "\\Device\\Disk", flags=airp.DeviceFlags.BUFFERED_IO
            )
            filter_device = io.create_device(example["Checksum"](), flags=airp.DeviceFlags.BUFFERED_IO)
            airp.attach_device(filter_device, lower)
            async with io.open("\\Device\\Disk") as handle:
                try:
                    return await handle.read(4)
                except BugCheck as error:
                    return error
    raise AssertionError("unreachable")


async def test_over_the_pages_disk_forced_pending_gives_0x06() -> None:
    disk = page_example()["Disk"]()
    caught = await read_with(disk, airp.Verifier(force_pending=True, drivers=["Checksum"]))
    assert isinstance(caught, BugCheck)
    assert caught.verifier_code == VerifierCode.COMPLETE_WITH_PENDING_STATUS


@pytest.mark.parametrize("forced", [True, False], ids=["forced-pending", "no-forced-pending"])
async def test_over_a_disk_that_pends_the_verifier_gives_0x307(forced: bool) -> None:
    caught = await read_with(None, airp.Verifier(force_pending=forced, drivers=["Checksum"]))
    assert isinstance(caught, BugCheck)
    assert caught.verifier_code == VerifierCode.WAIT_ON_SIGNALLED_EVENT
    assert caught.driver is not None
    assert type(caught.driver).__name__ == "Checksum"


async def test_over_a_disk_that_pends_without_the_verifier_it_is_0x226() -> None:
    caught = await read_with(None, None)
    assert isinstance(caught, BugCheck)
    assert caught.verifier_code == VerifierCode.DISPATCH_RETURNED_WITHOUT_PENDING


def test_the_page_says_which_to_expect_when() -> None:
    text = DOCS.read_text()
    section = " ".join(text[text.index("### A driver that assumes synchronous completion") :].split())
    assert "expect 0x06 over a lower driver that completes at once and 0x307 over one that pends" in section
    assert "0xC9 / 0x226" in section
