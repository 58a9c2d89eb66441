"""A requester whose request completed gets its own result.

A driver serving a read with an IRP of its own completes the read in that IRP's completion routine
and then, wrongly, returns STATUS_CONTINUE_COMPLETION (reference 5.8): the walk of its own IRP
reaches the final stage, which raises 0x2A.  The read had already completed successfully during
that walk.  The bug check goes to whoever called ``complete_request`` on the driver's IRP; the
requester gets its data.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, must

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Irp,
    IrpMajor,
    complete_request,
)

pytestmark = pytest.mark.anyio


class Serial(airp.Driver):
    """Serves each read through StartIo with an IRP of its own sent to ``lower``; its routine
    completes the read, then returns STATUS_CONTINUE_COMPLETION for its own IRP (the 5.8 bug)."""

    def __init__(self, lower: DeviceObject) -> None:
        super().__init__("serial")
        self.lower = lower

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        airp.start_packet(device, irp, cancel_routine=None)
        return STATUS_PENDING

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        own = fill_read(must(airp.allocate_irp(self.lower.stack_size)), 1)
        own.set_completion_routine(self.transfer_done, (device, irp))
        await airp.send_irp(self.lower, own)

    def transfer_done(self, device: DeviceObject | None, own: Irp, context: Any) -> int:
        serial, request = context
        request.system_buffer[:1] = b"!"
        complete_request(request, STATUS_SUCCESS, 1)
        airp.start_next_packet(serial, False)
        return STATUS_CONTINUE_COMPLETION


async def test_the_completer_gets_the_bug_check_and_the_waiting_reader_its_data(virtual_clock: Any) -> None:
    holder = Holder(cancelable=False)
    io = airp.IoManager()
    lower = io.create_device(holder)
    device = io.create_device(Serial(lower), "serial", flags=airp.DeviceFlags.BUFFERED_IO)
    got: list[object] = []
    async with airp.run_device(device), io.open("serial") as handle:

        async def reader() -> None:
            request = await handle.read_overlapped(1)
            got.append(await request)
            got.append(request.result())

        async with anyio.create_task_group() as group:
            group.start_soon(reader)
            await anyio.sleep(1)
            with pytest.raises(BugCheck) as completer:  # the lower driver's completion
                complete_request(holder.held.pop(), STATUS_SUCCESS, 1)
    assert completer.value.code == BugCheckCode.INCONSISTENT_IRP
    assert got == [b"!", b"!"]  # the read's own result, twice


def leaves(error: BaseException) -> list[BaseException]:
    inner: tuple[BaseException, ...] = getattr(error, "exceptions", ())  # an ExceptionGroup's
    if inner:
        return [leaf for one in inner for leaf in leaves(one)]
    return [error]


async def test_a_breach_in_the_device_worker_goes_to_the_device_not_the_reader() -> None:
    io = airp.IoManager()
    lower = io.create_device(Completer(information=1))  # completes the driver's IRP at once
    device = io.create_device(Serial(lower), "serial", flags=airp.DeviceFlags.BUFFERED_IO)
    got: list[bytes] = []
    with pytest.raises(Exception) as at_exit:  # noqa: PT011 - the device's ExceptionGroup, checked below
        async with airp.run_device(device), io.open("serial") as handle:
            got.append(await handle.read(1))
    assert got == [b"!"]  # the read's own result
    [bug_check] = [leaf for leaf in leaves(at_exit.value) if isinstance(leaf, BugCheck)]
    assert bug_check.code == BugCheckCode.INCONSISTENT_IRP  # the device reports it
