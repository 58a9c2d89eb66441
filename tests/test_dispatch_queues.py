"""KMDF-style dispatch queues (reference 9.1 to 9.4): sequential, parallel (with a limit) and manual
queues; start, stop, drain, purge and stop-and-purge; cancellation; forwarding; misuse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_DEVICE_STATE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WDF_BUSY,
    BugCheck,
    DeviceObject,
    DispatchType,
    IoQueue,
    Irp,
    IrpMajor,
    IrpStateError,
    NtStatusError,
    QueueState,
    Request,
    RoutineFailure,
    complete_request,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio

Handler = Callable[[IoQueue, Request], Awaitable[object]]


class QueueDriver(airp.Driver):
    """READ and WRITE go to ``device.extension.queue`` (or to the queue ``route`` picks)."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def io(self, device: DeviceObject, irp: Irp) -> int:
        queue: IoQueue = device.extension.route(irp)
        return queue.insert(irp)


class Setup:
    def __init__(self) -> None:
        self.io = airp.IoManager()
        self.device = self.io.create_device(QueueDriver(), "\\Device\\Q")
        self.device.extension = self
        self.queue: IoQueue | None = None
        self.write_queue: IoQueue | None = None
        self.log: list[tuple[str, int, float]] = []

    def route(self, irp: Irp) -> IoQueue:
        if irp.current_stack_location.major == IrpMajor.WRITE and self.write_queue is not None:
            return self.write_queue
        assert self.queue is not None
        return self.queue

    def timed(self, duration: float) -> Handler:
        async def handler(queue: IoQueue, request: Request) -> None:
            tag = request.irp.current_stack_location.parameters.byte_offset
            self.log.append(("start", tag, anyio.current_time()))
            await anyio.sleep(duration)
            self.log.append(("done", tag, anyio.current_time()))
            request.complete(STATUS_SUCCESS, 0)

        return handler

    def times(self, event: str = "done") -> list[float]:
        return [t for ev, _, t in self.log if ev == event]


def approx(*values: float) -> list[object]:
    return [pytest.approx(v) for v in values]


# -- dispatch types (9.1) --------------------------------------------------------------------------


async def test_sequential_queue_presents_one_at_a_time(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(5)]
        assert all(r.status_returned == STATUS_PENDING for r in requests)
        assert q.waiting == 5  # presented by the worker, never from inside the dispatch routine
        for r in requests:
            await r
        assert tasks.workers == 1
        assert q.delivered == 5
    assert s.times() == approx(1, 2, 3, 4, 5)
    assert [tag for ev, tag, _ in s.log if ev == "start"] == [0, 1, 2, 3, 4]


async def test_sequential_waits_for_completion_not_for_the_handler(virtual_clock: VirtualClock) -> None:
    # The handler starts the "hardware" and returns; the request is completed 2 s later from
    # another task.  The next request is presented only then.
    s = Setup()
    held: list[Request] = []
    arrived = anyio.Event()

    async def handler(queue: IoQueue, request: Request) -> None:
        s.log.append(("start", request.irp.current_stack_location.parameters.byte_offset, anyio.current_time()))
        held.append(request)
        arrived.set()

    q = s.queue = IoQueue(s.device, handler)

    async def hardware() -> None:
        nonlocal arrived
        for _ in range(3):
            await arrived.wait()
            arrived = anyio.Event()
            await anyio.sleep(2)
            assert q.outstanding == 1
            held.pop().complete(STATUS_SUCCESS, 0)

    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle, anyio.create_task_group() as tg:
        tg.start_soon(hardware)
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    assert s.times("start") == approx(0, 2, 4)


async def test_completing_the_irp_directly_in_the_handler_frees_the_slot(virtual_clock: VirtualClock) -> None:
    s = Setup()

    async def handler(queue: IoQueue, request: Request) -> None:
        await anyio.sleep(1)
        complete_request(request.irp, STATUS_SUCCESS, 0)  # not request.complete: still noticed

    q = s.queue = IoQueue(s.device, handler)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
        assert q.outstanding == 0
    assert virtual_clock.now() == pytest.approx(3)


async def test_parallel_queue_without_limit(virtual_clock: VirtualClock) -> None:
    s = Setup()
    s.queue = IoQueue(s.device, s.timed(1), dispatch=DispatchType.PARALLEL)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(10)]
        for r in requests:
            await r
        assert tasks.workers == 10  # one per request held at once; reused, not one per IRP
        more = [await handle.read_overlapped(0, offset=n) for n in range(10)]
        for r in more:
            await r
        assert tasks.workers == 10
    assert s.times() == approx(*[1] * 10, *[2] * 10)


async def test_parallel_queue_with_limit(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1), dispatch="parallel", limit=3)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(8)]
        await wait_until_quiet()
        assert q.outstanding == 3
        assert q.waiting == 5
        for r in requests:
            await r
        assert tasks.workers == 3
    assert s.times() == approx(1, 1, 1, 2, 2, 2, 3, 3)


async def test_parallel_limit_counts_requests_held_after_the_handler_returns(virtual_clock: VirtualClock) -> None:
    s = Setup()
    held: list[Request] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        held.append(request)

    q = s.queue = IoQueue(s.device, handler, dispatch=DispatchType.PARALLEL, limit=2)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(5)]
        await wait_until_quiet()
        assert len(held) == 2
        assert q.waiting == 3
        assert tasks.workers <= 2  # never more than the limit
        held.pop(0).complete(STATUS_SUCCESS, 0)
        await wait_until_quiet()
        assert len(held) == 2
        assert q.waiting == 2
        while held:
            held.pop(0).complete(STATUS_SUCCESS, 0)
            await wait_until_quiet()
        for r in requests:
            await r


async def test_manual_queue_is_never_presented(virtual_clock: VirtualClock) -> None:
    s = Setup()
    ready: list[IoQueue] = []
    q = s.queue = IoQueue(s.device, dispatch=DispatchType.MANUAL, ready_notify=ready.append)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        first = await handle.read_overlapped(0, offset=1)
        second = await handle.read_overlapped(0, offset=2)
        await anyio.sleep(5)
        assert ready == [q]  # empty -> not empty, once
        assert q.waiting == 2
        assert tasks.workers == 0
        request = q.retrieve_next_request()
        assert request is not None
        assert request.irp is first.irp
        assert request.owned
        assert request.irp.cancel_routine is None
        request.complete(STATUS_SUCCESS, 0)
        await first
        other = q.retrieve_next_request()
        assert other is not None
        other.complete(STATUS_SUCCESS, 0)
        await second
        assert q.retrieve_next_request() is None
        third = await handle.read_overlapped(0, offset=3)
        assert ready == [q, q]
        (q.retrieve_next_request() or pytest.fail("no request")).complete(STATUS_SUCCESS, 0)
        await third


async def test_retrieve_request_by_file_object(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, dispatch=DispatchType.MANUAL)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as a, s.io.open("\\Device\\Q") as b:
        from_a = await a.read_overlapped(0)
        from_b = await b.read_overlapped(0)
        request = q.retrieve_request_by_file_object(b.file_object)
        assert request is not None
        assert request.irp is from_b.irp
        assert q.retrieve_request_by_file_object(b.file_object) is None
        request.complete(STATUS_SUCCESS, 0)
        (q.retrieve_next_request() or pytest.fail("no request")).complete(STATUS_SUCCESS, 0)
        await from_a
        await from_b


# -- state operations (9.2) -----------------------------------------------------------------------


async def test_stop_holds_new_and_queued_requests(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(2))
    stopped: list[float] = []
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        first = await handle.read_overlapped(0, offset=0)
        await anyio.sleep(1)
        q.stop(lambda queue: stopped.append(anyio.current_time()))
        assert q.state is QueueState.STOPPED
        second = await handle.read_overlapped(0, offset=1)  # accepted and held
        assert second.status_returned == STATUS_PENDING
        await first  # the delivered one is untouched
        assert stopped == approx(2)  # once the delivered request completed
        await anyio.sleep(10)
        assert not second.done
        assert q.waiting == 1
        q.start()
        await second
    assert s.times("start") == approx(0, 12)


async def test_stop_synchronously_with_nothing_outstanding() -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device):
        await q.stop_synchronously()
        assert q.state is QueueState.STOPPED
        assert q.accepting


async def test_started_false_creates_a_stopped_queue(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1), started=False)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        request = await handle.read_overlapped(0)
        await anyio.sleep(3)
        assert not request.done
        q.start()
        await request
    assert s.times("start") == approx(3)


async def test_drain_refuses_new_and_delivers_queued(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        drained = anyio.Event()
        q.drain(lambda queue: drained.set())
        assert not q.accepting
        late = await handle.read_overlapped(0, offset=9)
        # Refused synchronously, not pended.
        assert late.status_returned == STATUS_INVALID_DEVICE_STATE
        with pytest.raises(NtStatusError) as caught:
            await late
        assert caught.value.status == STATUS_INVALID_DEVICE_STATE
        await drained.wait()
        assert anyio.current_time() == pytest.approx(3)
        for r in requests:
            await r
        q.start()
        await handle.read(0)


async def test_drain_synchronously(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(4)]
        await q.drain_synchronously()
        assert anyio.current_time() == pytest.approx(4)
        assert all(r.done for r in requests)
        assert q.state is QueueState.DRAINED


async def test_purge_cancels_queued_and_cancelable_delivered(virtual_clock: VirtualClock) -> None:
    s = Setup()
    cancelled: list[Request] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        def on_cancel(request: Request) -> None:
            cancelled.append(request)
            request.complete(STATUS_CANCELLED, 0)

        assert request.mark_cancelable(on_cancel) == STATUS_SUCCESS

    q = s.queue = IoQueue(s.device, handler)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        await wait_until_quiet()
        assert q.outstanding == 1
        assert q.waiting == 2
        purged: list[IoQueue] = []
        q.purge(purged.append)
        assert purged == [q]
        assert [r.irp.status for r in requests] == [STATUS_CANCELLED] * 3
        assert [c.irp for c in cancelled] == [requests[0].irp]  # EvtRequestCancel for the delivered one
        assert cancelled[0].is_canceled
        late = await handle.read_overlapped(0)
        assert late.status_returned == STATUS_INVALID_DEVICE_STATE
        assert q.state is QueueState.PURGED


async def test_purge_waits_for_non_cancelable_delivered_requests(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(5))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        first = await handle.read_overlapped(0, offset=0)
        second = await handle.read_overlapped(0, offset=1)
        await anyio.sleep(1)
        await q.purge_synchronously()
        assert anyio.current_time() == pytest.approx(5)
        assert first.irp.status == STATUS_SUCCESS
        assert second.irp.status == STATUS_CANCELLED


async def test_stop_and_purge_accepts_new_requests(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        await wait_until_quiet()  # the first has been presented
        await q.stop_and_purge_synchronously()
        assert anyio.current_time() == pytest.approx(1)  # the delivered one finished
        assert [r.irp.status for r in requests] == [STATUS_SUCCESS, STATUS_CANCELLED, STATUS_CANCELLED]
        later = await handle.read_overlapped(0, offset=7)
        assert later.status_returned == STATUS_PENDING  # accepted and held
        await anyio.sleep(3)
        assert not later.done
        q.start()
        await later
        assert q.state is QueueState.STARTED


async def test_purge_with_canceled_on_queue_callback(virtual_clock: VirtualClock) -> None:
    s = Setup()
    seen: list[Request] = []

    def canceled_on_queue(queue: IoQueue, request: Request) -> None:
        seen.append(request)
        assert request.owned
        assert request.is_canceled
        request.complete(STATUS_CANCELLED, 7)

    q = s.queue = IoQueue(s.device, s.timed(1), started=False, on_canceled_on_queue=canceled_on_queue)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        request = await handle.read_overlapped(0)
        q.purge()
        assert [r.irp for r in seen] == [request.irp]
        assert request.irp.io_status == (STATUS_CANCELLED, 7)


# -- cancellation (9.3) ---------------------------------------------------------------------------


async def test_cancelled_while_queued_never_reaches_the_handler(virtual_clock: VirtualClock) -> None:
    s = Setup()
    q = s.queue = IoQueue(s.device, s.timed(2))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        assert airp.cancel_irp(requests[1].irp) is True
        assert requests[1].irp.status == STATUS_CANCELLED
        assert q.waiting == 2  # nothing presented yet: the worker has not run
        with anyio.move_on_after(1):
            await handle.read(0, offset=9)  # the requester times out: its queued IRP is cancelled
        for n in (0, 2):
            await requests[n]
    assert [tag for ev, tag, _ in s.log if ev == "start"] == [0, 2]


async def test_already_cancelled_irp_is_cancelled_on_add(virtual_clock: VirtualClock) -> None:
    s = Setup()

    class PreCancel(QueueDriver):
        @airp.dispatch(IrpMajor.READ)
        async def io(self, device: DeviceObject, irp: Irp) -> int:
            airp.cancel_irp(irp)
            return device.extension.queue.insert(irp)  # type: ignore[no-any-return]

    s.device.driver.major_function[IrpMajor.READ] = PreCancel().io
    s.queue = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        request = await handle.read_overlapped(0)
        assert request.status_returned == STATUS_PENDING
        assert request.irp.status == STATUS_CANCELLED  # arm, re-check: cancelled at once
    assert s.log == []


async def test_mark_and_unmark_cancelable(virtual_clock: VirtualClock) -> None:
    s = Setup()
    results: dict[str, object] = {}

    def on_cancel(request: Request) -> None:
        results["callback"] = request
        request.complete(STATUS_CANCELLED, 0)

    async def handler(queue: IoQueue, request: Request) -> None:
        tag = request.irp.current_stack_location.parameters.byte_offset
        if tag == 0:  # cancelled while cancelable: the callback completes it
            assert request.mark_cancelable(on_cancel) == STATUS_SUCCESS
            assert request.mark_cancelable(on_cancel) == STATUS_INVALID_DEVICE_REQUEST  # already
            await anyio.sleep(10)
            assert request.unmark_cancelable() == STATUS_CANCELLED  # must not complete it now
        elif tag == 1:  # unmarked in time: the driver completes it
            assert request.mark_cancelable(on_cancel) == STATUS_SUCCESS
            await anyio.sleep(1)
            assert request.unmark_cancelable() == STATUS_SUCCESS
            assert request.unmark_cancelable() == STATUS_INVALID_DEVICE_REQUEST
            request.complete(STATUS_SUCCESS, 0)
        else:  # cancelled before it was marked: MarkCancelableEx says so
            await anyio.sleep(1)
            results["late"] = request.mark_cancelable(on_cancel)
            request.complete(STATUS_CANCELLED, 0)

    s.queue = IoQueue(s.device, handler, dispatch=DispatchType.PARALLEL)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        await anyio.sleep(0.5)
        airp.cancel_irp(requests[0].irp)
        airp.cancel_irp(requests[2].irp)
        assert requests[0].irp.status == STATUS_CANCELLED
        for r in requests:
            await r.irp
    assert isinstance(results["callback"], Request)
    assert results["callback"].irp is requests[0].irp
    assert results["late"] == STATUS_CANCELLED
    assert requests[1].irp.status == STATUS_SUCCESS


async def test_completing_a_cancelable_request_is_a_bug_check(virtual_clock: VirtualClock) -> None:
    s = Setup()
    caught: list[BugCheck] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        request.mark_cancelable(lambda request: None)
        try:
            request.complete(STATUS_SUCCESS, 0)
        except BugCheck as error:
            caught.append(error)
            request.unmark_cancelable()
            request.complete(STATUS_SUCCESS, 0)

    s.queue = IoQueue(s.device, handler)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        await handle.read(0)
    assert caught
    assert caught[0].code == 0xC9
    assert caught[0].parameters[0] == 0x07


# -- forwarding (9.4) -----------------------------------------------------------------------------


async def test_forward_frees_the_source_slot(virtual_clock: VirtualClock) -> None:
    s = Setup()
    slow_done: list[tuple[int, float]] = []

    async def triage(queue: IoQueue, request: Request) -> None:
        s.log.append(("triage", request.irp.current_stack_location.parameters.byte_offset, anyio.current_time()))
        assert request.forward_to_queue(slow) == STATUS_SUCCESS
        assert not request.owned
        assert request.queue is slow

    async def slow_handler(queue: IoQueue, request: Request) -> None:
        await anyio.sleep(2)
        slow_done.append((request.irp.current_stack_location.parameters.byte_offset, anyio.current_time()))
        request.complete(STATUS_SUCCESS, 0)

    s.queue = IoQueue(s.device, triage, name="triage")
    slow = IoQueue(s.device, slow_handler, name="slow")
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    # Triage saw all three at once (forwarding freed its sequential slot); slow serialised them.
    assert [t for ev, _, t in s.log if ev == "triage"] == approx(0, 0, 0)
    assert slow_done == [(0, 2.0), (1, 4.0), (2, 6.0)]


async def test_forward_rules(virtual_clock: VirtualClock) -> None:
    s = Setup()
    other_device = s.io.create_device(QueueDriver())
    results: list[object] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        results.append(request.forward_to_queue(queue))  # destination == source
        results.append(request.forward_to_queue(elsewhere))  # another device
        request.mark_cancelable(lambda request: None)
        results.append(request.forward_to_queue(target))  # cancelable
        request.unmark_cancelable()
        target.drain()
        results.append(request.forward_to_queue(target))  # destination not accepting
        target.start()
        results.append(request.forward_to_queue(target))  # fine
        results.append(request.forward_to_queue(target))  # no longer owned

    s.queue = IoQueue(s.device, handler)
    target = IoQueue(s.device, s.timed(0))
    elsewhere = IoQueue(other_device, s.timed(0))
    async with airp.run_device(s.device), airp.run_device(other_device), s.io.open("\\Device\\Q") as handle:
        await handle.read(0)
    assert results == [
        STATUS_INVALID_DEVICE_REQUEST,
        STATUS_INVALID_DEVICE_REQUEST,
        STATUS_INVALID_DEVICE_REQUEST,
        STATUS_WDF_BUSY,
        STATUS_SUCCESS,
        STATUS_INVALID_DEVICE_REQUEST,
    ]


async def test_forward_of_a_cancelled_irp_is_cancelled_by_the_destination(virtual_clock: VirtualClock) -> None:
    s = Setup()

    async def handler(queue: IoQueue, request: Request) -> None:
        airp.cancel_irp(request.irp)  # nobody armed anything: only the flag
        assert request.forward_to_queue(target) == STATUS_SUCCESS

    s.queue = IoQueue(s.device, handler)
    target = IoQueue(s.device, s.timed(1))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        with pytest.raises(NtStatusError) as caught:
            await handle.read(0)
    assert caught.value.status == STATUS_CANCELLED
    assert s.log == []


# -- handlers that raise, misuse -------------------------------------------------------------------


async def test_raising_handler_fails_its_request_and_the_queue_goes_on(virtual_clock: VirtualClock) -> None:
    s = Setup()
    failures: list[RoutineFailure] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        tag = request.irp.current_stack_location.parameters.byte_offset
        await anyio.sleep(1)
        if tag == 1:
            raise ZeroDivisionError("oops")
        request.complete(STATUS_SUCCESS, 0)

    q = s.queue = IoQueue(s.device, handler, name="flaky")
    async with airp.run_device(s.device, on_error=failures.append), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r.irp
        assert q.outstanding == 0
    assert [r.irp.status for r in requests] == [STATUS_SUCCESS, STATUS_INTERNAL_ERROR, STATUS_SUCCESS]
    assert [(f.queue, f.irp, type(f.error)) for f in failures] == [("flaky", requests[1].irp, ZeroDivisionError)]
    assert virtual_clock.now() == pytest.approx(3)


async def test_adding_an_irp_twice_is_an_error() -> None:
    s = Setup()

    class Twice(QueueDriver):
        @airp.dispatch(IrpMajor.READ)
        async def io(self, device: DeviceObject, irp: Irp) -> int:
            status = s.queue.insert(irp)  # type: ignore[union-attr]
            with pytest.raises(IrpStateError, match="already in"):
                s.write_queue.insert(irp)  # type: ignore[union-attr]
            return status

    s.device.driver.major_function[IrpMajor.READ] = Twice().io
    s.queue = IoQueue(s.device, s.timed(0))
    s.write_queue = IoQueue(s.device, s.timed(0))
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        await handle.read(0)


async def test_complete_a_request_the_driver_does_not_own(virtual_clock: VirtualClock) -> None:
    s = Setup()
    forwarded: list[Request] = []

    async def handler(queue: IoQueue, request: Request) -> None:
        assert request.forward_to_queue(parked) == STATUS_SUCCESS
        forwarded.append(request)

    s.queue = IoQueue(s.device, handler)
    parked = IoQueue(s.device, dispatch="manual")
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        await handle.read_overlapped(0)
        await wait_until_quiet()
        (request,) = forwarded
        assert not request.owned  # queued in the manual queue: the framework owns it
        with pytest.raises(IrpStateError, match="does not own"):
            request.complete(STATUS_SUCCESS, 0)
        assert request.mark_cancelable(lambda r: None) == STATUS_INVALID_DEVICE_REQUEST

        async def coroutine_callback(request: Request) -> None:
            pass

        with pytest.raises(TypeError, match="plain function"):
            request.mark_cancelable(coroutine_callback)
        taken = parked.retrieve_next_request()
        assert taken is request
        assert request.queue is parked
        request.complete(STATUS_SUCCESS, 0)
        with pytest.raises(IrpStateError, match="does not own"):
            request.complete(STATUS_SUCCESS, 0)


async def test_add_on_a_device_that_is_not_running() -> None:
    s = Setup()
    s.queue = IoQueue(s.device, s.timed(0))
    async with s.io.open("\\Device\\Q") as handle:
        with pytest.raises(RuntimeError, match="run_device"):
            await handle.read_overlapped(0)
    assert s.io.outstanding_requests() == []


def test_queue_construction_errors() -> None:
    s = Setup()

    async def handler(queue: IoQueue, request: Request) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        IoQueue(s.device)
    with pytest.raises(TypeError, match="async def"):
        IoQueue(s.device, lambda q, r: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="manual queue"):
        IoQueue(s.device, handler, dispatch=DispatchType.MANUAL)
    with pytest.raises(ValueError, match="only a parallel queue"):
        IoQueue(s.device, handler, limit=4)
    with pytest.raises(ValueError, match="limit"):
        IoQueue(s.device, handler, dispatch=DispatchType.PARALLEL, limit=0)
    with pytest.raises(ValueError, match="'lifo'"):
        IoQueue(s.device, handler, dispatch="lifo")

    async def bad_callback(queue: IoQueue) -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        IoQueue(s.device, handler, ready_notify=bad_callback)


async def test_a_raising_cancel_callback_does_not_stall_a_purge(virtual_clock: VirtualClock) -> None:
    s = Setup()

    async def handler(queue: IoQueue, request: Request) -> None:
        def on_cancel(request: Request) -> None:
            raise KeyError("cancel callback")

        assert request.mark_cancelable(on_cancel) == STATUS_SUCCESS

    q = s.queue = IoQueue(s.device, handler)
    async with airp.run_device(s.device), s.io.open("\\Device\\Q") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(2)]
        await wait_until_quiet()
        purged: list[IoQueue] = []
        with pytest.raises(KeyError, match="cancel callback"):
            q.purge(purged.append)  # the purge's caller hears about it ...
        # ... and no request is left behind: the delivered one completed with INTERNAL_ERROR, its
        # slot freed, so the purge's callback has run.
        assert [r.irp.status for r in requests] == [STATUS_INTERNAL_ERROR, STATUS_CANCELLED]
        assert purged == [q]
        assert q.outstanding == 0


async def test_a_raising_on_canceled_on_queue_completes_the_request(virtual_clock: VirtualClock) -> None:
    s = Setup()

    def canceled_on_queue(queue: IoQueue, request: Request) -> None:
        raise KeyError("on_canceled_on_queue")

    q = s.queue = IoQueue(s.device, dispatch="manual", on_canceled_on_queue=canceled_on_queue)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Q") as handle:
        request = await handle.read_overlapped(0)
        with pytest.raises(KeyError, match="on_canceled_on_queue"):
            airp.cancel_irp(request.irp)
        assert request.irp.status == STATUS_INTERNAL_ERROR
        assert q.waiting == 0
        assert tasks.state is airp.DeviceState.RUNNING
