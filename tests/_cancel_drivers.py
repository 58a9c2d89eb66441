"""Test drivers for the cancellation tests (issue #4)."""

from __future__ import annotations

from typing import Any

import airp
from airp import STATUS_PENDING, STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request


class HeldReads(airp.Driver):
    """Holds every read in an :class:`airp.IrpQueue` until :meth:`push` satisfies it.

    CLEANUP completes the closing handle's held reads as cancelled (reference 6.5) unless
    ``cleanup=False`` (a driver that forgets, to test airp's safety net).
    """

    def __init__(self, *, cleanup: bool = True) -> None:
        super().__init__("held-reads")
        self.queue = airp.IrpQueue()
        self.cleanup = cleanup
        self.cleanups = 0

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.CLEANUP)
    async def on_cleanup(self, device: DeviceObject, irp: Irp) -> int:
        self.cleanups += 1
        if self.cleanup:
            self.queue.complete_all(irp.current_stack_location.file_object)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return self.queue.insert(irp)

    def push(self, data: bytes, file_object: Any = None) -> bool:
        """Satisfy the oldest held read (of *file_object*, if given) with *data*."""
        irp = self.queue.remove_next(file_object)
        if irp is None:
            return False
        length = irp.current_stack_location.parameters.length
        chunk = data[:length]
        irp.user_buffer[: len(chunk)] = chunk
        complete_request(irp, STATUS_SUCCESS, len(chunk))
        return True


class Deaf(airp.Driver):
    """Holds reads and ignores cancellation entirely (no cancel routine, never looks at irp.cancel)."""

    def __init__(self) -> None:
        super().__init__("deaf")
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        return STATUS_PENDING

    def release_all(self, status: int = STATUS_SUCCESS) -> int:
        held, self.held = self.held, []
        for irp in held:
            complete_request(irp, status, 0)
        return len(held)


def make_io(driver: airp.Driver, name: str = "\\Device\\Test") -> tuple[airp.IoManager, DeviceObject]:
    io = airp.IoManager()
    device = io.create_device(driver, name)
    return io, device


def held_irp(device: DeviceObject | None = None, *, stack_size: int = 1) -> tuple[Irp, list[int]]:
    """An IRP sent (without an event loop) to a driver of *device*: it has a current location.

    Returns the IRP and a list that receives its final status each time the walk reaches the top
    (so a test can check "completed exactly once").
    """
    irp = Irp(stack_size + 1)
    done: list[int] = []

    def creator_routine(dev: DeviceObject | None, irp: Irp, ctx: Any) -> int:
        done.append(int(irp.status))
        return airp.STATUS_CONTINUE_COMPLETION

    irp.set_completion_routine(creator_routine)
    irp.set_next_stack_location()
    loc = irp.current_stack_location
    loc.major = IrpMajor.READ
    loc.device = device
    # Below the creator's location, a driver's location (what call_driver would give it).
    irp.copy_current_stack_location_to_next()
    irp.set_next_stack_location()
    irp.current_stack_location.device = device
    return irp, done
