"""A routine that raises on a PnP-started device is that device's failure alone.

The PnP manager runs a started device's queues (``run_device``) in the I/O manager's task group.
A queue handler that raises has its IRP completed with STATUS_INTERNAL_ERROR; the failure must not
end the whole ``async with io`` block when the device is removed, cancelling the requesters of
every other device.  It goes to the device's own ``on_error`` (set in ``add_device``), else to
``IoManager(on_error=...)``, else it is raised as a :class:`~airp.DeviceRoutineError` when the
block ends, after everything else has run.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _pnp_drivers import Function, Log

import airp
from airp import STATUS_INTERNAL_ERROR, DeviceObject, DeviceRoutineError, NtStatusError, RoutineFailure

pytestmark = pytest.mark.anyio

BROKEN, FINE = r"\Device\Broken", r"\Device\Fine"
IOCTL = 0x222000  # METHOD_BUFFERED


class BrokenHandler(Function):
    """A function driver whose KMDF queue handler raises on every device control."""

    async def on_ioctl(self, queue: airp.IoQueue, request: airp.Request) -> None:
        raise ValueError("the handler's bug")


class BrokenWithItsOwnOnError(BrokenHandler):
    """The same, with a device that hears of its own failures (set in add_device)."""

    def __init__(self, log: Log) -> None:
        super().__init__(log, "broken")
        self.heard: list[RoutineFailure] = []

    def add_device(self, pdo: DeviceObject) -> None:
        super().add_device(pdo)
        device = pdo.attached_device
        assert device is not None
        airp.device_tasks(device).on_error = self.heard.append


async def scenario(io: airp.IoManager, broken: Function, seen: dict[str, Any]) -> None:
    """A broken device and a fine one; the broken one fails a request and is removed while the
    fine one's requester is waiting for its read."""
    log = broken.log
    a = await io.add_device("broken", name=BROKEN, function=broken)
    await io.start_device(a)
    b = await io.add_device("fine", name=FINE, function=Function(log, "fine", latency=5.0))
    await io.start_device(b)
    async with io.open(BROKEN) as handle:
        with pytest.raises(NtStatusError) as failed:
            await handle.device_control(IOCTL, b"", 4)
        seen["status"] = failed.value.status
    async with io.open(FINE) as handle:

        async def read() -> None:
            seen["read"] = await handle.read(4)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(1.0)
            await io.remove_device(a)  # the broken device's queues end here
            seen["removed"] = a.removed
    seen["device"] = a.devices[1]


async def test_without_on_error_the_failure_is_raised_when_the_block_ends_and_nobody_else_is_cancelled() -> None:
    seen: dict[str, Any] = {}
    broken = BrokenHandler(Log(), "broken")

    async def block() -> None:
        async with airp.IoManager() as io:
            seen["io"] = io
            await scenario(io, broken, seen)
            seen["after"] = True  # the block's body ran to its end

    with pytest.raises(DeviceRoutineError) as info:
        await block()
    assert seen["status"] == STATUS_INTERNAL_ERROR
    # The other device's requester was not cancelled: its read completed, and the body went on.
    assert seen["read"] == b"rrrr"
    assert seen["removed"]
    assert seen["after"]
    [failure] = info.value.failures
    assert failure.device is seen["device"]
    assert isinstance(failure.error, ValueError)
    assert failure.status == STATUS_INTERNAL_ERROR
    assert isinstance(info.value.__cause__, ValueError)
    assert seen["io"].routine_failures == [failure]


async def test_the_io_manager_s_on_error_hears_each_failure_as_it_happens() -> None:
    seen: dict[str, Any] = {}
    heard: list[tuple[RoutineFailure, float]] = []
    broken = BrokenHandler(Log(), "broken")
    async with airp.IoManager(on_error=lambda failure: heard.append((failure, anyio.current_time()))) as io:
        await scenario(io, broken, seen)
        assert len(heard) == 1  # at once, not at the device's removal
        assert heard[0][1] == 0.0
        assert io.routine_failures == [heard[0][0]]
    assert seen["read"] == b"rrrr"
    [(failure, _at)] = heard
    assert failure.device is seen["device"]
    assert isinstance(failure.error, ValueError)


async def test_a_device_s_own_on_error_set_in_add_device_is_kept() -> None:
    seen: dict[str, Any] = {}
    io_heard: list[RoutineFailure] = []
    broken = BrokenWithItsOwnOnError(Log())
    async with airp.IoManager(on_error=io_heard.append) as io:
        await scenario(io, broken, seen)
        assert io.routine_failures == []
    assert io_heard == []
    [failure] = broken.heard
    assert failure.device is seen["device"]
    assert seen["read"] == b"rrrr"


def test_on_error_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"IoManager's on_error is a callable .*got str 'x'"):
        airp.IoManager(on_error="x")  # type: ignore[arg-type]
