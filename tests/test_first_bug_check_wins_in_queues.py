"""The first error wins in queues too: a StartIo routine, a KMDF queue handler or
a cancel-safe queue callback that raises while it holds a driver's own IRP has that IRP completed
with STATUS_INTERNAL_ERROR; the IRP's final stage then raises 0x2A (its creator kept no routine
returning STATUS_MORE_PROCESSING_REQUIRED), and that follow-on is chained to the routine's error,
never put in its place."""

from __future__ import annotations

import pytest

import airp
from airp import STATUS_INTERNAL_ERROR, BugCheck, BugCheckCode, DeviceObject, Irp, IrpMajor

pytestmark = pytest.mark.anyio


class Broken(airp.Driver):
    """READ goes to a StartIo lane or a KMDF queue whose routine raises."""

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.insert(irp) if isinstance(device.extension, airp.IoQueue) else device.extension.start_packet(irp)  # type: ignore[no-any-return]

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        raise LookupError("the routine's own error")

    async def handler(self, queue: airp.IoQueue, request: airp.Request) -> None:
        raise LookupError("the routine's own error")


def own_read(device: DeviceObject) -> Irp:
    # A driver's own IRP with no completion routine at all: its final stage is 0x2A (reference 5.8).
    irp = airp.allocate_irp(device.stack_size)
    assert irp is not None
    irp.next_stack_location.major = IrpMajor.READ
    irp.next_stack_location.parameters = airp.ReadWriteParameters(4, 0)
    return irp


@pytest.mark.parametrize("kind", ["startio", "kmdf"])
async def test_a_raising_queue_routine_keeps_its_error_with_the_0x2a_chained(kind: str) -> None:
    driver = Broken()
    device = airp.IoManager().create_device(driver)
    if kind == "startio":
        device.extension = airp.StartIoQueue(device, "io", driver.start_io)
    else:
        device.extension = airp.IoQueue(device, driver.handler, name="io")
    failures: list[airp.RoutineFailure] = []
    irp = own_read(device)
    async with airp.run_device(device, on_error=failures.append):
        await airp.send_irp(device, irp)
        await airp.delay(1)
    # The lane or queue reports the routine's own error, with the 0x2A as its follow-on.
    [failure] = failures
    assert isinstance(failure.error, LookupError)
    assert failure.status == STATUS_INTERNAL_ERROR
    follow_on = failure.error.follow_on  # type: ignore[attr-defined]
    assert isinstance(follow_on, BugCheck)
    assert follow_on.code == BugCheckCode.INCONSISTENT_IRP
    assert irp.completed
    assert irp.status == STATUS_INTERNAL_ERROR
