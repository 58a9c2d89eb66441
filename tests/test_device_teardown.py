"""When a device goes away: its queues stop accepting, queued IRPs complete with a defined status
(STATUS_NO_SUCH_DEVICE unless told otherwise), IRPs in progress are cancelled and finished by their
routines, and the device's task group ends only when its workers have finished."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_DELETE_PENDING,
    STATUS_INTERNAL_ERROR,
    STATUS_NO_SUCH_DEVICE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    DeviceObject,
    DeviceState,
    IoQueue,
    Irp,
    IrpMajor,
    NtStatusError,
    Request,
    StartIoQueue,
    complete_request,
)
from airp.testing import VirtualClock, virtual_anyio_backend, wait_until_quiet

pytestmark = pytest.mark.anyio


class Everything(airp.Driver):
    """READ -> the system StartIo queue, WRITE -> a lane, DEVICE_CONTROL -> a dispatch queue.

    Every routine takes ``duration`` seconds, then completes with STATUS_CANCELLED if the IRP was
    cancelled meanwhile, else with success.
    """

    def __init__(self, duration: float = 3.0) -> None:
        super().__init__("everything")
        self.duration = duration
        self.finished: list[tuple[str, float]] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return airp.start_packet(device, irp, cancel_routine=airp.start_io_cancel_routine)

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension["lane"].start_packet(irp)  # type: ignore[no-any-return]

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def ioctl(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension["queue"].insert(irp)  # type: ignore[no-any-return]

    async def _work(self, kind: str, irp: Irp) -> NtStatus:
        await anyio.sleep(self.duration)
        self.finished.append((kind, anyio.current_time()))
        return STATUS_CANCELLED if irp.cancel else STATUS_SUCCESS

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        status = await self._work("read", irp)
        irp.set_cancel_routine(None)
        airp.complete_and_start_next(device, irp, status, 0, cancelable=True)

    async def lane(self, device: DeviceObject, irp: Irp) -> None:
        complete_request(irp, await self._work("write", irp), 0)

    async def handler(self, queue: IoQueue, request: Request) -> None:
        request.complete(await self._work("ioctl", request.irp), 0)


NtStatus = airp.NtStatus


def make(duration: float = 3.0, **queue_options: Any) -> tuple[airp.IoManager, DeviceObject, Everything]:
    driver = Everything(duration)
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {
        "lane": StartIoQueue(device, "write", driver.lane),
        "queue": IoQueue(device, driver.handler, **queue_options),
    }
    return io, device, driver


async def issue(handle: airp.FileHandle, count: int = 3) -> dict[str, list[airp.Overlapped[Any]]]:
    sent: dict[str, list[airp.Overlapped[Any]]] = {"read": [], "write": [], "ioctl": []}
    for n in range(count):
        sent["read"].append(await handle.read_overlapped(0, offset=n))
        sent["write"].append(await handle.write_overlapped(b"", offset=n))
        sent["ioctl"].append(await handle.device_control_overlapped(0x222003))
    return sent


def statuses(sent: dict[str, list[airp.Overlapped[Any]]]) -> dict[str, list[int]]:
    assert all(r.done for rs in sent.values() for r in rs), "an IRP was lost"
    return {kind: [r.irp.status for r in rs] for kind, rs in sent.items()}


async def test_leaving_the_block_removes_the_device(virtual_clock: VirtualClock) -> None:
    io, device, driver = make()
    handle = await io.open("\\Device\\All")
    async with airp.run_device(device) as tasks:
        sent = await issue(handle)
        await anyio.sleep(1)
        assert tasks.workers == 3
    # Queued IRPs completed with STATUS_NO_SUCH_DEVICE at once (t=1); the three in progress were
    # cancelled and their routines finished them (t=3); only then did the block end.
    assert virtual_clock.now() == pytest.approx(3)
    assert statuses(sent) == {kind: [STATUS_CANCELLED, STATUS_NO_SUCH_DEVICE, STATUS_NO_SUCH_DEVICE] for kind in sent}
    assert sorted(driver.finished) == [("ioctl", 3.0), ("read", 3.0), ("write", 3.0)]
    assert tasks.state is DeviceState.REMOVED
    assert tasks.workers == 0
    assert device.current_irp is None
    await handle.close()


async def test_arrivals_after_removal_complete_with_the_removal_status(virtual_clock: VirtualClock) -> None:
    io, device, driver = make()
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device):
            pass
        read = await handle.read_overlapped(0)
        assert read.status_returned == STATUS_PENDING  # start_packet always pends ...
        write = await handle.write_overlapped(b"")
        ioctl = await handle.device_control_overlapped(0x222003)
        assert ioctl.status_returned == STATUS_NO_SUCH_DEVICE  # ... IoQueue.add fails synchronously
        for request in (read, write, ioctl):
            with pytest.raises(NtStatusError) as caught:
                await request
            assert caught.value.status == STATUS_NO_SUCH_DEVICE
    assert driver.finished == []


async def test_remove_while_the_block_runs(virtual_clock: VirtualClock) -> None:
    io, device, _driver = make(duration=2)
    async with airp.run_device(device) as tasks, io.open("\\Device\\All") as handle:
        sent = await issue(handle, 2)
        await anyio.sleep(1)
        tasks.remove()
        tasks.remove()  # idempotent
        assert tasks.state is DeviceState.REMOVING
        assert not device.extension["queue"].accepting
        with pytest.raises(NtStatusError) as caught:
            await handle.write(b"late")
        assert caught.value.status == STATUS_NO_SUCH_DEVICE
        await anyio.sleep(5)
        assert tasks.workers == 0  # idle workers of a removed device end
    assert statuses(sent) == {kind: [STATUS_CANCELLED, STATUS_NO_SUCH_DEVICE] for kind in sent}


async def test_removal_status_can_be_chosen(virtual_clock: VirtualClock) -> None:
    io, device, _ = make()
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device, removal_status=STATUS_DELETE_PENDING):
            sent = await issue(handle, 2)
            await anyio.sleep(1)
        assert statuses(sent) == {kind: [STATUS_CANCELLED, STATUS_DELETE_PENDING] for kind in sent}


async def test_grace_bounds_the_wait_for_routines(virtual_clock: VirtualClock) -> None:
    io, device, driver = make(duration=1000)
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device, grace=5):
            sent = await issue(handle, 2)
            await anyio.sleep(1)
        # The routines were still busy at t=1+5: they were cancelled, and the IRPs they held were
        # completed with the removal status.
        assert anyio.current_time() == pytest.approx(6)
        assert statuses(sent) == {kind: [STATUS_NO_SUCH_DEVICE] * 2 for kind in sent}
    assert driver.finished == []


async def test_cancelled_block_still_completes_every_irp(virtual_clock: VirtualClock) -> None:
    io, device, driver = make(duration=10)
    async with io.open("\\Device\\All") as handle:
        with anyio.move_on_after(2) as scope:
            async with airp.run_device(device) as tasks:
                sent = await issue(handle)
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert anyio.current_time() == pytest.approx(2)
        assert tasks.state is DeviceState.REMOVED
        assert statuses(sent) == {kind: [STATUS_NO_SUCH_DEVICE] * 3 for kind in sent}
    assert driver.finished == []


async def test_an_error_in_the_block_propagates_unwrapped(virtual_clock: VirtualClock) -> None:
    io, device, _ = make(duration=10)
    sent: dict[str, list[airp.Overlapped[Any]]] = {}

    async def run(handle: airp.FileHandle) -> None:
        async with airp.run_device(device):
            sent.update(await issue(handle, 2))
            raise LookupError("boom")

    async with io.open("\\Device\\All") as handle:
        with pytest.raises(LookupError, match="boom"):
            await run(handle)
        assert statuses(sent) == {kind: [STATUS_NO_SUCH_DEVICE] * 2 for kind in sent}


async def test_a_bug_check_in_a_routine_stops_the_device(virtual_clock: VirtualClock) -> None:
    class DoubleComplete(Everything):
        async def lane(self, device: DeviceObject, irp: Irp) -> None:
            complete_request(irp, STATUS_SUCCESS, 0)
            complete_request(irp, STATUS_SUCCESS, 0)  # 0x44

    driver = DoubleComplete()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
    sent: dict[str, list[airp.Overlapped[Any]]] = {}

    async def run(handle: airp.FileHandle) -> None:
        async with airp.run_device(device):
            sent.update(await issue(handle, 2))
            await anyio.sleep_forever()

    async with io.open("\\Device\\All") as handle:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - an ExceptionGroup, checked below
            await run(handle)
        leaves: tuple[BaseException, ...] = getattr(caught.value, "exceptions", ())
        assert [type(e) for e in leaves] == [BugCheck]
        assert isinstance(leaves[0], BugCheck)
        assert leaves[0].code == 0x44
        # The machine stopped, but no IRP was left behind.
        assert all(r.done for rs in sent.values() for r in rs)


async def test_failures_with_on_error_are_not_raised(virtual_clock: VirtualClock) -> None:
    class Raising(Everything):
        async def lane(self, device: DeviceObject, irp: Irp) -> None:
            raise ValueError("nope")

    failures: list[airp.RoutineFailure] = []
    driver = Raising()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
    async with io.open("\\Device\\All") as handle, airp.run_device(device, on_error=failures.append):
        with pytest.raises(NtStatusError):
            await handle.write(b"")
    assert len(failures) == 1


async def test_cancelable_delivered_request_is_cancelled_on_removal(virtual_clock: VirtualClock) -> None:
    cancelled: list[float] = []

    class Cancelable(Everything):
        async def handler(self, queue: IoQueue, request: Request) -> None:
            def on_cancel(request: Request) -> None:
                cancelled.append(anyio.current_time())
                request.complete(STATUS_CANCELLED, 0)

            request.mark_cancelable(on_cancel)

    driver = Cancelable()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device):
            first = await handle.device_control_overlapped(0x222003)
            second = await handle.device_control_overlapped(0x222003)
            await anyio.sleep(4)
            await wait_until_quiet()
            assert not first.done  # held by the driver, cancelable
        assert cancelled == [pytest.approx(4)]
        assert first.irp.status == STATUS_CANCELLED
        assert second.irp.status == STATUS_NO_SUCH_DEVICE


# -- cancelling the block from outside ------------------------------------------------------------


async def requesters_inside(
    handle: airp.FileHandle, send: list[str], released: dict[int, float], sent: list[airp.Overlapped[Any]]
) -> None:
    """One requester task per entry of *send*, each awaiting its request; records when it is released."""

    async def one(n: int, kind: str) -> None:
        if kind == "read":
            request: airp.Overlapped[Any] = await handle.read_overlapped(0, offset=n)
        elif kind == "write":
            request = await handle.write_overlapped(b"", offset=n)
        else:
            request = await handle.device_control_overlapped(0x222003)
        sent.append(request)
        try:
            await request
        finally:
            released[n] = anyio.current_time()

    async with anyio.create_task_group() as tg:
        for n, kind in enumerate(send):
            tg.start_soon(one, n, kind)


@pytest.mark.parametrize("kind", ["read", "write", "ioctl"])
async def test_cancelling_the_block_completes_queued_irps_at_once(virtual_clock: VirtualClock, kind: str) -> None:
    # The requesters run inside the block, so the block's body is waiting for them: the removal
    # must begin when the task group is cancelled, not when the body has unwound.
    airp.set_cancel_wait_limit(3)
    io, device, driver = make(duration=10)
    released: dict[int, float] = {}
    sent: list[airp.Overlapped[Any]] = []
    async with io.open("\\Device\\All") as handle:
        with anyio.move_on_after(0.3) as scope:
            async with airp.run_device(device) as tasks:
                await requesters_inside(handle, [kind, kind, kind], released, sent)
        assert scope.cancelled_caught
        assert released == {n: pytest.approx(0.3) for n in range(3)}
        # The one in progress completes with the removal status; a queued one with the removal
        # status too, or with STATUS_CANCELLED if its requester's cancel ran its cancel routine
        # first (which of the two cancellations runs first is the backend's choice).
        assert all(r.irp.status in {STATUS_NO_SUCH_DEVICE, STATUS_CANCELLED} for r in sent)
        assert STATUS_NO_SUCH_DEVICE in {r.irp.status for r in sent}
        assert tasks.state is DeviceState.REMOVED
    assert driver.finished == []


def make_manual() -> tuple[airp.IoManager, DeviceObject, Everything]:
    """As :func:`make`, with a manual dispatch queue: nothing ever takes its requests."""
    driver = Everything()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, dispatch="manual")}
    return io, device, driver


async def test_cancelling_the_block_reaches_a_queue_without_workers(virtual_clock: VirtualClock) -> None:
    # A manual queue has no worker at all: the device's own watch begins the removal.
    airp.set_cancel_wait_limit(3)
    io, device, _driver = make_manual()
    released: dict[int, float] = {}
    sent: list[airp.Overlapped[Any]] = []
    async with io.open("\\Device\\All") as handle:
        with anyio.move_on_after(0.3):
            async with airp.run_device(device):
                await requesters_inside(handle, ["ioctl", "ioctl"], released, sent)
    assert released == {0: pytest.approx(0.3), 1: pytest.approx(0.3)}
    assert all(r.irp.status in {STATUS_NO_SUCH_DEVICE, STATUS_CANCELLED} for r in sent)


async def test_a_removal_goes_on_past_an_upper_routine_that_raises(virtual_clock: VirtualClock) -> None:
    # Every queued IRP completes, even when completing the first one runs an upper driver's
    # completion routine that raises; the first exception comes out of the block afterwards.
    class Touchy(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
        async def create_close(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

        @airp.dispatch(IrpMajor.DEVICE_CONTROL)
        async def ioctl(self, device: DeviceObject, irp: Irp) -> int:
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(self.done)
            return await airp.call_driver(device.lower_device, irp)

        def done(self, device: DeviceObject | None, irp: Irp, context: object) -> int:
            if irp.pending_returned:
                irp.mark_pending()
            raise LookupError("upper routine")

    io, device, _driver = make_manual()
    top = io.create_device(Touchy(), "\\Device\\Top")
    airp.attach_device(top, device)
    async with io.open("\\Device\\Top") as handle:
        sent: list[airp.Overlapped[Any]] = []
        with pytest.raises(LookupError, match="upper routine"):
            async with airp.run_device(device):
                sent = [await handle.device_control_overlapped(0x222003) for _ in range(3)]
        assert all(r.done for r in sent)


# -- requests the driver still holds when the block ends -----------------------------------------


class Keeper(Everything):
    """A queue handler that keeps every request (to complete it later) instead of completing it."""

    def __init__(self, cancelable: bool = False) -> None:
        super().__init__()
        self.kept: list[Request] = []
        self.cancelable = cancelable

    async def handler(self, queue: IoQueue, request: Request) -> None:
        self.kept.append(request)
        if self.cancelable:
            request.mark_cancelable(lambda request: request.complete(STATUS_CANCELLED, 0))


def make_keeper(**options: Any) -> tuple[airp.IoManager, DeviceObject, Keeper]:
    driver = Keeper(**options)
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
    return io, device, driver


async def test_the_block_waits_for_a_request_the_driver_kept(virtual_clock: VirtualClock) -> None:
    io, device, driver = make_keeper()
    seen: list[tuple[float, DeviceState]] = []

    async def finish_later(tasks: airp.DeviceTasks) -> None:
        await anyio.sleep(5)
        seen.append((anyio.current_time(), tasks.state))
        driver.kept[0].complete(STATUS_SUCCESS, 0)

    async with io.open("\\Device\\All") as handle, anyio.create_task_group() as tg:
        async with airp.run_device(device) as tasks:
            request = await handle.device_control_overlapped(0x222003)
            await wait_until_quiet()
            assert driver.kept
            tg.start_soon(finish_later, tasks)
        # The block ended only once the driver had let the request go; until then the device was
        # still being removed, not removed.
        assert anyio.current_time() == pytest.approx(5)
        assert seen == [(pytest.approx(5), DeviceState.REMOVING)]
        assert tasks.state is DeviceState.REMOVED
        assert request.irp.status == STATUS_SUCCESS
        assert request.irp.cancel  # it was asked to give the request up


async def test_a_kept_cancelable_request_is_cancelled_when_the_block_ends(virtual_clock: VirtualClock) -> None:
    io, device, driver = make_keeper(cancelable=True)
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device) as tasks:
            request = await handle.device_control_overlapped(0x222003)
            await anyio.sleep(1)
            tasks.remove()  # removal begun early: the request is cancelled now
            assert request.irp.status == STATUS_CANCELLED
            late = await handle.device_control_overlapped(0x222003)
        assert anyio.current_time() == pytest.approx(1)
        assert late.irp.status == STATUS_NO_SUCH_DEVICE
        assert len(driver.kept) == 1


async def test_a_kept_request_past_the_cancel_wait_limit_is_disowned(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(7)
    io, device, driver = make_keeper()

    async def run(handle: airp.FileHandle) -> tuple[airp.DeviceTasks, airp.Overlapped[Any]]:
        async with airp.run_device(device) as tasks:
            request = await handle.device_control_overlapped(0x222003)
            await anyio.sleep(1)
        return tasks, request

    async with io.open("\\Device\\All") as handle:
        with pytest.warns(airp.DriverCancelTimeoutWarning) as caught:
            tasks, request = await run(handle)
        assert anyio.current_time() == pytest.approx(1 + 7)
        assert tasks.state is DeviceState.REMOVED
        (warning,) = [w.message for w in caught]
        assert isinstance(warning, airp.DriverCancelTimeoutWarning)
        assert warning.irp is request.irp
        assert warning.device is device
        assert warning.limit == 7
        # Disowned by the device, still the driver's: completing it later works, once.
        assert not request.done
        driver.kept[0].complete(STATUS_CANCELLED, 0)
        assert request.irp.status == STATUS_CANCELLED


async def test_a_cancelled_block_still_waits_shielded_for_a_kept_request(virtual_clock: VirtualClock) -> None:
    io, device, driver = make_keeper()

    async def finish_later() -> None:
        await anyio.sleep(4)
        driver.kept[0].complete(STATUS_SUCCESS, 0)

    async with io.open("\\Device\\All") as handle, anyio.create_task_group() as tg:
        with anyio.move_on_after(1) as scope:
            async with airp.run_device(device) as tasks:
                request = await handle.device_control_overlapped(0x222003)
                tg.start_soon(finish_later)
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert anyio.current_time() == pytest.approx(4)
        assert tasks.state is DeviceState.REMOVED
        assert request.irp.status == STATUS_SUCCESS


async def test_a_kept_request_completed_with_complete_request_is_let_go(virtual_clock: VirtualClock) -> None:
    # Completing the IRP itself (rather than through Request.complete) still wakes the exit.
    io, device, driver = make_keeper()

    async def finish_later() -> None:
        await anyio.sleep(2)
        complete_request(driver.kept[0].irp, STATUS_SUCCESS, 0)

    async with io.open("\\Device\\All") as handle, anyio.create_task_group() as tg:
        async with airp.run_device(device):
            request = await handle.device_control_overlapped(0x222003)
            await wait_until_quiet()
            tg.start_soon(finish_later)
        assert anyio.current_time() == pytest.approx(2)
        assert request.irp.status == STATUS_SUCCESS


async def test_a_kept_requests_raising_cancel_callback_is_reported(virtual_clock: VirtualClock) -> None:
    failures: list[airp.RoutineFailure] = []

    class Raising(Keeper):
        async def handler(self, queue: IoQueue, request: Request) -> None:
            self.kept.append(request)

            def on_cancel(request: Request) -> None:
                raise KeyError("cancel callback")

            request.mark_cancelable(on_cancel)

    driver = Raising()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
    async with io.open("\\Device\\All") as handle:
        async with airp.run_device(device, on_error=failures.append):
            request = await handle.device_control_overlapped(0x222003)
            await wait_until_quiet()
        assert anyio.current_time() == 0
        assert request.irp.status == STATUS_INTERNAL_ERROR
        assert [type(f.error) for f in failures] == [KeyError]
        assert failures[0].irp is request.irp
        assert failures[0].status == STATUS_INTERNAL_ERROR
        assert not driver.kept[0].owned


async def test_a_start_io_irp_left_to_be_completed_elsewhere_is_cancelled_and_waited_for(
    virtual_clock: VirtualClock,
) -> None:
    # A lane whose routine returns with its IRP still held (start_next_on_return=False): on
    # removal the IRP is cancelled, and the block waits for whoever completes it.
    held: list[Irp] = []
    cancelled = anyio.Event()

    class Elsewhere(Everything):
        async def lane(self, device: DeviceObject, irp: Irp) -> None:
            held.append(irp)  # the "hardware" completes it
            irp.set_cancel_routine(lambda device, irp: cancelled.set())

    driver = Elsewhere()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    lane = StartIoQueue(device, "write", driver.lane, start_next_on_return=False)
    device.extension = {"lane": lane, "queue": IoQueue(device, driver.handler)}

    async def completer() -> None:
        await cancelled.wait()
        await anyio.sleep(1)  # the hardware takes a second to give it up
        complete_request(held[0], STATUS_CANCELLED, 0)

    async with io.open("\\Device\\All") as handle, anyio.create_task_group() as tg:
        tg.start_soon(completer)
        async with airp.run_device(device):
            first = await handle.write_overlapped(b"")
            second = await handle.write_overlapped(b"")
            await anyio.sleep(0.5)
        assert anyio.current_time() == pytest.approx(1.5)
        assert first.irp.status == STATUS_CANCELLED
        assert second.irp.status == STATUS_NO_SUCH_DEVICE


# -- a device runs once --------------------------------------------------------------------------


async def test_a_device_runs_once() -> None:
    _io, device, _ = make()
    tasks = airp.run_device(device)
    with pytest.raises(RuntimeError, match="not running"):
        tasks.remove()
    async with tasks:
        with pytest.raises(RuntimeError, match="runs once"):
            airp.run_device(device)
        with pytest.raises(RuntimeError, match="runs once"):
            await tasks.__aenter__()
    with pytest.raises(RuntimeError, match="runs once"):
        async with tasks:
            pass
    with pytest.raises(RuntimeError, match="removed"):
        StartIoQueue(device, "another", Everything().lane)
    assert airp.device_tasks(device) is tasks


def test_bad_grace() -> None:
    _, device, _ = make()
    with pytest.raises(ValueError, match="grace"):
        airp.run_device(device, grace=-1)


# -- random schedules: every IRP completes exactly once -------------------------------------------

schedules = st.lists(
    st.tuples(
        st.sampled_from(["read", "write", "ioctl"]),
        st.integers(min_value=0, max_value=4),  # arrival time
        st.integers(min_value=0, max_value=3),  # device time
        st.none() | st.integers(min_value=0, max_value=8),  # cancel time (after arrival)
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=schedules, removal=st.none() | st.integers(min_value=0, max_value=12), backend=st.sampled_from(["asyncio", "trio"]))
def test_random_schedules_complete_every_irp_exactly_once(
    schedule: list[tuple[str, int, int, int | None]], removal: int | None, backend: str
) -> None:
    busy: dict[str, int] = {"read": 0, "write": 0, "ioctl": 0}

    class Random(Everything):
        async def _work(self, kind: str, irp: Irp) -> NtStatus:
            busy[kind] += 1
            assert busy[kind] == 1, f"two {kind} routines at once"
            try:
                await anyio.sleep(durations[irp])
            finally:
                busy[kind] -= 1
            return STATUS_CANCELLED if irp.cancel else STATUS_SUCCESS

    durations: dict[Irp, int] = {}
    sent: list[airp.Overlapped[Any]] = []

    async def main() -> None:
        driver = Random()
        io = airp.IoManager()
        device = io.create_device(driver, "\\Device\\All")
        device.extension = {"lane": StartIoQueue(device, "write", driver.lane), "queue": IoQueue(device, driver.handler)}
        handle = await io.open("\\Device\\All")

        async def one(kind: str, at: int, duration: int, cancel_at: int | None) -> None:
            await anyio.sleep(at)
            if kind == "read":
                request: airp.Overlapped[Any] = await handle.read_overlapped(0)
            elif kind == "write":
                request = await handle.write_overlapped(b"")
            else:
                request = await handle.device_control_overlapped(0x222003)
            durations[request.irp] = duration
            sent.append(request)
            if cancel_at is not None:
                await anyio.sleep(cancel_at)
                airp.cancel_irp(request.irp)

        async with airp.run_device(device) as tasks, anyio.create_task_group() as tg:
            for spec in schedule:
                tg.start_soon(one, *spec)
            if removal is not None:
                await anyio.sleep(removal)
                tasks.remove()
        assert tasks.workers == 0
        await handle.close()

    name, options = virtual_anyio_backend(backend)
    anyio.run(main, backend=name, backend_options=options)
    assert len(sent) == len(schedule)
    for request in sent:
        # Completed (exactly once: a second completion would have raised BugCheck 0x44).
        assert request.done
        assert request.irp.status in {STATUS_SUCCESS, STATUS_CANCELLED, STATUS_NO_SUCH_DEVICE}


async def test_a_start_io_irp_handed_back_up_is_not_the_devices_any_more(virtual_clock: VirtualClock) -> None:
    # The lane completes its IRP, the walk stops at the filter above (forward_and_wait), and the
    # routine never starts the next packet: the IRP is still the lane's current IRP, but it is
    # the filter's now.  The removal neither cancels it nor waits for it.
    release = anyio.Event()

    class Waits(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
        async def create_close(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

        @airp.dispatch(IrpMajor.WRITE)
        async def write(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            status = await airp.forward_and_wait(device.lower_device, irp)
            await release.wait()
            complete_request(irp)
            return status.status

    class CompletesOnly(Everything):
        async def lane(self, device: DeviceObject, irp: Irp) -> None:
            complete_request(irp, STATUS_SUCCESS, 0)

    driver = CompletesOnly()
    io = airp.IoManager()
    device = io.create_device(driver, "\\Device\\All")
    lane = StartIoQueue(device, "write", driver.lane, start_next_on_return=False)
    device.extension = {"lane": lane, "queue": IoQueue(device, driver.handler)}
    top = io.create_device(Waits(), "\\Device\\Top")
    airp.attach_device(top, device)
    written: list[int] = []

    async def writer(handle: airp.FileHandle) -> None:
        written.append(await handle.write(b"abc"))

    async with io.open("\\Device\\Top") as handle, anyio.create_task_group() as tg:
        async with airp.run_device(device):
            tg.start_soon(writer, handle)  # its dispatch routine runs in its task, and waits
            await wait_until_quiet()
            irp = lane.current_irp
            assert irp is not None
        assert anyio.current_time() == 0
        assert not irp.cancel
        release.set()
    assert written == [0]
    assert irp.status == STATUS_SUCCESS


async def test_a_kept_request_under_a_filter_is_let_go_when_the_driver_completes_it(virtual_clock: VirtualClock) -> None:
    # The filter above takes the IRP back (forward_and_wait), so completing the request does not
    # finish the IRP: the exit must still hear of it at once, not at the cancel-wait limit.
    class Filter(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
        async def create_close(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

        @airp.dispatch(IrpMajor.DEVICE_CONTROL)
        async def ioctl(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            status = await airp.forward_and_wait(device.lower_device, irp)
            await anyio.sleep(5)  # the filter's own work, after the device let the IRP go
            complete_request(irp)
            return status.status

    io, device, driver = make_keeper()
    top = io.create_device(Filter(), "\\Device\\Top")
    airp.attach_device(top, device)
    statuses: list[int] = []

    async def requester(handle: airp.FileHandle) -> None:
        try:
            await handle.device_control(0x222003)
        except airp.NtStatusError as error:
            statuses.append(error.status)
        else:
            statuses.append(STATUS_SUCCESS)

    async def finish_later() -> None:
        await anyio.sleep(2)
        driver.kept[0].complete(STATUS_SUCCESS, 0)

    async with io.open("\\Device\\Top") as handle, anyio.create_task_group() as tg:
        async with airp.run_device(device) as tasks:
            tg.start_soon(requester, handle)
            await wait_until_quiet()
            tg.start_soon(finish_later)
        assert anyio.current_time() == pytest.approx(2)  # not 7: the device let go at 2
        assert tasks.state is DeviceState.REMOVED
    assert statuses == [STATUS_SUCCESS]
