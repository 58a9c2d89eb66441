"""Cancel-safe queues (reference 6.4): the queue operations and Hypothesis-explored interleavings.

The queue is sans-I/O: everything here runs without an event loop.  The state machine also splits
a cancel into its two halves (the cancel routine is *taken*, then later *run*), the window that
another CPU opens in Windows between IoCancelIrp taking the routine and the routine acquiring the
queue lock, to check the branches of 6.3 that a single-threaded cancel never reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _cancel_drivers import HeldReads, held_irp, make_io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    STATUS_SUCCESS,
    CancelSafeQueue,
    CsqIrpContext,
    DeviceObject,
    Driver,
    FileObject,
    Irp,
    IrpQueue,
    IrpStateError,
    StackControl,
    cancel_irp,
    complete_request,
)
from airp.testing import VirtualClock

_FILE_DEVICE = DeviceObject(Driver("files"))
FILES = (FileObject(_FILE_DEVICE), FileObject(_FILE_DEVICE))


def _irp(file_object: FileObject | None = None) -> tuple[Irp, list[int]]:
    irp, done = held_irp(DeviceObject(Driver("csq")))
    irp.current_stack_location.file_object = file_object
    return irp, done


def test_insert_pends_and_arms() -> None:
    queue = IrpQueue()
    irp, done = _irp()
    assert queue.insert(irp) == STATUS_PENDING
    assert irp.current_stack_location.control & StackControl.PENDING_RETURNED
    assert irp.cancel_routine is not None
    assert irp in queue
    assert len(queue) == 1
    assert done == []


def test_cancel_while_queued_completes_cancelled_once() -> None:
    queue = IrpQueue()
    irp, done = _irp()
    queue.insert(irp)
    assert cancel_irp(irp) is True
    assert done == [STATUS_CANCELLED]
    assert irp not in queue
    assert len(queue) == 0
    assert cancel_irp(irp) is False
    assert queue.remove_next() is None


def test_insert_of_already_cancelled_irp_completes_it_at_once() -> None:
    queue = IrpQueue()
    irp, done = _irp()
    cancel_irp(irp)
    assert queue.insert(irp) == STATUS_PENDING  # marked pending: the dispatch returns PENDING
    assert done == [STATUS_CANCELLED]
    assert len(queue) == 0


def test_remove_next_fifo_and_peek_context() -> None:
    queue = IrpQueue()
    a, b = FILES
    a1, _ = _irp(a)
    b1, _ = _irp(b)
    a2, _ = _irp(a)
    for irp in (a1, b1, a2):
        queue.insert(irp)
    assert queue.remove_next(b) is b1
    assert b1.cancel_routine is None  # no longer cancelable: the caller owns it
    assert queue.remove_next(b) is None
    assert list(queue) == [a1, a2]
    assert queue.remove_next() is a1
    assert queue.remove_next(a) is a2
    assert queue.remove_next() is None


def test_remove_specific_irp_with_context() -> None:
    queue = IrpQueue()
    irp, done = _irp()
    other, _ = _irp()
    ctx = CsqIrpContext()
    queue.insert(irp, ctx)
    queue.insert(other)
    assert ctx.irp is irp
    assert ctx.queue is queue
    assert queue.remove(ctx) is irp
    assert ctx.irp is None
    assert queue.remove(ctx) is None
    assert list(queue) == [other]
    complete_request(irp, STATUS_SUCCESS, 0)
    assert done == [STATUS_SUCCESS]


def test_remove_with_context_after_cancel_returns_none() -> None:
    queue = IrpQueue()
    irp, done = _irp()
    ctx = CsqIrpContext()
    queue.insert(irp, ctx)
    cancel_irp(irp)
    assert ctx.irp is None
    assert queue.remove(ctx) is None
    assert done == [STATUS_CANCELLED]


def test_cancel_in_flight_is_skipped_by_remove_next_and_remove() -> None:
    # Another "CPU" has taken the cancel routine but not yet run it (6.3): the queue must leave
    # the IRP to that routine.
    queue = IrpQueue()
    irp, done = _irp()
    ctx = CsqIrpContext()
    queue.insert(irp, ctx)
    later, _ = _irp()
    queue.insert(later)
    irp.cancel = True
    routine = irp.set_cancel_routine(None)
    assert routine is not None
    assert queue.remove(ctx) is None
    assert ctx.irp is irp  # untouched: the routine will clear it
    assert queue.remove_next() is later  # skips the one being cancelled
    routine(None, irp)
    assert done == [STATUS_CANCELLED]
    assert ctx.irp is None
    assert len(queue) == 0


def test_drain_is_the_cleanup_loop() -> None:
    queue = IrpQueue()
    irps = [_irp(FILES[i % 2]) for i in range(6)]
    for irp, _ in irps:
        queue.insert(irp)
    assert queue.complete_all(FILES[0]) == 3
    assert [done for irp, done in irps] == [[STATUS_CANCELLED], [], [STATUS_CANCELLED], [], [STATUS_CANCELLED], []]
    assert queue.cancel_all() == 3
    assert all(done == [STATUS_CANCELLED] for _, done in irps)


def test_custom_complete_canceled_irp() -> None:
    seen: list[Irp] = []

    def complete(irp: Irp) -> None:
        seen.append(irp)
        complete_request(irp, airp.STATUS_DEVICE_REMOVED, 0)

    queue = IrpQueue(complete_canceled_irp=complete)
    irp, done = _irp()
    queue.insert(irp)
    cancel_irp(irp)
    assert seen == [irp]
    assert done == [airp.STATUS_DEVICE_REMOVED]


def test_callback_queue_with_plain_functions() -> None:
    storage: list[Irp] = []

    def insert(irp: Irp, ctx: Any) -> int | None:
        if ctx == "full":
            return STATUS_INSUFFICIENT_RESOURCES
        storage.append(irp)
        return None

    def peek(irp: Irp | None, ctx: Any) -> Irp | None:
        start = 0 if irp is None else storage.index(irp) + 1
        return storage[start] if start < len(storage) else None

    queue = CancelSafeQueue(insert_irp=insert, remove_irp=storage.remove, peek_next_irp=peek)
    irp, done = _irp()
    assert queue.insert(irp) == STATUS_PENDING
    refused, _refused_done = _irp()
    assert queue.insert(refused, insert_context="full") == STATUS_INSUFFICIENT_RESOURCES
    # Refused: not queued, not marked pending, no cancel routine; the driver completes it.
    assert refused.cancel_routine is None
    assert not refused.current_stack_location.control & StackControl.PENDING_RETURNED
    complete_request(refused, STATUS_INSUFFICIENT_RESOURCES, 0)
    cancel_irp(irp)
    assert storage == []
    assert done == [STATUS_CANCELLED]


def test_subclass_queue() -> None:
    class Lifo(CancelSafeQueue):
        def __init__(self) -> None:
            self.items: list[Irp] = []
            super().__init__()

        def insert_irp(self, irp: Irp, insert_context: Any) -> int | None:
            self.items.append(irp)
            return None

        def remove_irp(self, irp: Irp) -> None:
            self.items.remove(irp)

        def peek_next_irp(self, irp: Irp | None, peek_context: Any) -> Irp | None:
            order = self.items[::-1]
            start = 0 if irp is None else order.index(irp) + 1
            return order[start] if start < len(order) else None

    queue = Lifo()
    a, _ = _irp()
    b, _ = _irp()
    queue.insert(a)
    queue.insert(b)
    assert queue.remove_next() is b


def test_bad_input() -> None:
    async def coroutine_callback(irp: Irp, ctx: Any) -> None: ...

    with pytest.raises(TypeError, match="coroutine function"):
        CancelSafeQueue(insert_irp=coroutine_callback)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plain function"):
        IrpQueue(matches=42)  # type: ignore[arg-type]
    queue = IrpQueue()
    fresh = Irp(2)
    with pytest.raises(IrpStateError, match="current stack location"):
        queue.insert(fresh)
    irp, _ = _irp()
    queue.insert(irp)
    with pytest.raises(IrpStateError, match="already has cancel routine"):
        queue.insert(irp)
    other = IrpQueue()
    with pytest.raises(IrpStateError, match="another queue"):
        other.insert(irp)
    ctx = CsqIrpContext()
    second, _ = _irp()
    third, _ = _irp()
    queue.insert(second, ctx)
    with pytest.raises(IrpStateError, match="in use"):
        queue.insert(third, ctx)
    with pytest.raises(NotImplementedError):
        CancelSafeQueue().insert(third)


# -- a callback that raises never loses its IRP -------------------------------------------------


def _raise(error: Exception) -> Callable[..., Any]:
    def callback(*args: Any) -> None:
        raise error

    return callback


def test_a_raising_complete_canceled_irp_completes_the_irp_with_internal_error() -> None:
    error = KeyError("complete_canceled_irp")
    queue = IrpQueue(complete_canceled_irp=_raise(error))
    irp, done = _irp()
    ctx = CsqIrpContext()
    queue.insert(irp, ctx)
    with pytest.raises(KeyError) as caught:
        cancel_irp(irp)
    assert caught.value is error  # the canceller hears about it
    assert done == [STATUS_INTERNAL_ERROR]  # ... and the IRP is not lost
    assert irp.routine_error is error
    assert irp not in queue
    assert ctx.irp is None
    assert cancel_irp(irp) is False
    assert queue.remove_next() is None


def test_a_complete_canceled_irp_that_completes_then_raises_is_not_completed_twice() -> None:
    def complete_then_raise(irp: Irp) -> None:
        complete_request(irp, airp.STATUS_DEVICE_REMOVED, 0)
        raise LookupError("after completing")

    queue = IrpQueue(complete_canceled_irp=complete_then_raise)
    irp, done = _irp()
    queue.insert(irp)
    with pytest.raises(LookupError):
        cancel_irp(irp)
    assert done == [airp.STATUS_DEVICE_REMOVED]
    assert irp.routine_error is None


def test_inserting_a_cancelled_irp_with_a_raising_callback_completes_it() -> None:
    queue = IrpQueue(complete_canceled_irp=_raise(KeyError("boom")))
    irp, done = _irp()
    cancel_irp(irp)
    with pytest.raises(KeyError):
        queue.insert(irp)
    assert done == [STATUS_INTERNAL_ERROR]
    assert len(queue) == 0


def test_a_raising_insert_irp_leaves_the_irp_with_the_dispatch_routine() -> None:
    queue = CancelSafeQueue(
        insert_irp=_raise(MemoryError("full")), remove_irp=lambda irp: None, peek_next_irp=lambda irp, ctx: None
    )
    irp, done = _irp()
    ctx = CsqIrpContext()
    with pytest.raises(MemoryError):
        queue.insert(irp, ctx)
    # Refused, as an error status would refuse it: not pended, not cancelable, context free.
    assert irp.cancel_routine is None
    assert not irp.current_stack_location.control & StackControl.PENDING_RETURNED
    assert ctx.irp is None
    assert done == []
    complete_request(irp, STATUS_SUCCESS, 0)  # still the dispatch routine's to finish
    assert done == [STATUS_SUCCESS]


class _FlakyStorage(IrpQueue):
    """An IrpQueue whose remove_irp raises (after unlinking) while ``fail`` is set."""

    fail = False

    def remove_irp(self, irp: Irp) -> None:
        super().remove_irp(irp)
        if self.fail:
            raise OSError("remove_irp")


def test_a_raising_remove_irp_in_remove_next_completes_the_irp_it_was_taking() -> None:
    queue = _FlakyStorage()
    first, first_done = _irp()
    second, second_done = _irp()
    queue.insert(first)
    queue.insert(second)
    queue.fail = True
    with pytest.raises(OSError, match="remove_irp"):
        queue.remove_next()
    # The caller never got it, so nobody else would have completed it.
    assert first_done == [STATUS_INTERNAL_ERROR]
    assert second_done == []
    queue.fail = False
    assert list(queue) == [second]
    assert second.cancel_routine is not None  # untouched, still cancelable
    assert queue.remove_next() is second


def test_a_raising_remove_irp_in_remove_completes_the_irp() -> None:
    queue = _FlakyStorage()
    irp, done = _irp()
    ctx = CsqIrpContext()
    queue.insert(irp, ctx)
    queue.fail = True
    with pytest.raises(OSError, match="remove_irp"):
        queue.remove(ctx)
    assert done == [STATUS_INTERNAL_ERROR]
    assert ctx.irp is None
    assert queue.remove(ctx) is None


def test_a_raising_remove_irp_in_the_cancel_routine_completes_the_irp() -> None:
    queue = _FlakyStorage()
    irp, done = _irp()
    queue.insert(irp)
    queue.fail = True
    with pytest.raises(OSError, match="remove_irp"):
        cancel_irp(irp)
    assert done == [STATUS_INTERNAL_ERROR]


def test_a_raising_peek_takes_nothing() -> None:
    storage: list[Irp] = []
    queue = CancelSafeQueue(
        insert_irp=lambda irp, ctx: storage.append(irp), remove_irp=storage.remove, peek_next_irp=_raise(ValueError("peek"))
    )
    irp, done = _irp()
    queue.insert(irp)
    with pytest.raises(ValueError, match="peek"):
        queue.remove_next()
    assert storage == [irp]
    assert irp.cancel_routine is not None
    assert done == []


def test_cancel_all_cancels_every_irp_even_if_one_callback_raises() -> None:
    calls: list[Irp] = []

    def complete(irp: Irp) -> None:
        calls.append(irp)
        if len(calls) == 1:
            raise KeyError("first")
        complete_request(irp, STATUS_CANCELLED, 0)

    queue = IrpQueue(complete_canceled_irp=complete)
    irps = [_irp() for _ in range(3)]
    for irp, _ in irps:
        queue.insert(irp)
    with pytest.raises(KeyError, match="first"):
        queue.cancel_all()
    assert [done for _, done in irps] == [[STATUS_INTERNAL_ERROR], [STATUS_CANCELLED], [STATUS_CANCELLED]]
    assert len(queue) == 0


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["insert", "cancel", "remove_next", "cleanup"]), st.booleans()), max_size=30))
def test_raising_callbacks_never_lose_an_irp(steps: list[tuple[str, bool]]) -> None:
    """Any mix of operations, each with its callbacks raising or not: every IRP is queued, held by
    the caller, or completed exactly once, and the queue never lists a completed IRP."""

    class Flaky(IrpQueue):
        fail = False

        def remove_irp(self, irp: Irp) -> None:
            super().remove_irp(irp)
            if self.fail:
                raise OSError("remove_irp")

        def complete_canceled_irp(self, irp: Irp) -> None:
            if self.fail:
                raise KeyError("complete_canceled_irp")
            super().complete_canceled_irp(irp)

    queue = Flaky()
    done: dict[Irp, list[int]] = {}
    held: set[Irp] = set()
    for operation, fail in steps:
        queue.fail = fail
        try:
            if operation == "insert":
                irp, done[irp] = _irp()
                queue.insert(irp)
            elif operation == "cancel" and len(queue):
                cancel_irp(next(iter(queue)))
            elif operation == "remove_next":
                taken = queue.remove_next()
                if taken is not None:
                    held.add(taken)
            elif operation == "cleanup":
                queue.complete_all()
        except (OSError, KeyError):
            pass
        for irp, statuses in done.items():
            assert len(statuses) <= 1
            assert (irp in queue) + (irp in held) + len(statuses) == 1, f"{irp!r} lost or in two places"
    queue.fail = False
    queue.complete_all()
    for irp in held:
        complete_request(irp, STATUS_SUCCESS, 0)
    assert all(len(statuses) == 1 for statuses in done.values())


# -- Hypothesis: insert / cancel / remove-next / remove / complete / cleanup, any order --------


class CsqMachine(RuleBasedStateMachine):
    """Every IRP completes exactly once; a cancelled IRP is never left queued; none is lost."""

    queued = Bundle("queued")
    owned = Bundle("owned")

    def __init__(self) -> None:
        super().__init__()
        self.queue = IrpQueue()
        self.done: dict[Irp, list[int]] = {}
        self.contexts: dict[Irp, CsqIrpContext] = {}
        self.in_flight: dict[Irp, Callable[[Any, Irp], None]] = {}
        self.owned_irps: set[Irp] = set()

    @rule(target=queued, file=st.sampled_from(FILES), with_context=st.booleans(), pre_cancelled=st.booleans())
    def insert(self, file: FileObject, with_context: bool, pre_cancelled: bool) -> Irp:
        irp, done = _irp(file)
        self.done[irp] = done
        if pre_cancelled:
            cancel_irp(irp)
        ctx = CsqIrpContext() if with_context else None
        if ctx is not None:
            self.contexts[irp] = ctx
        assert self.queue.insert(irp, ctx) == STATUS_PENDING
        if pre_cancelled:
            assert done == [STATUS_CANCELLED]
            assert irp not in self.queue
        return irp

    @rule(irp=queued)
    def cancel(self, irp: Irp) -> None:
        was_queued = irp in self.queue and irp not in self.in_flight
        ran = cancel_irp(irp)
        assert ran == was_queued
        if was_queued:
            assert self.done[irp] == [STATUS_CANCELLED]
            assert irp not in self.queue

    @rule(irp=queued)
    def take_cancel_routine(self, irp: Irp) -> None:
        # First half of a cancel on "another CPU": flag set, routine taken, not run yet.
        if irp in self.queue and irp not in self.in_flight:
            irp.cancel = True
            routine = irp.set_cancel_routine(None)
            assert routine is not None
            self.in_flight[irp] = routine

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def run_cancel_routine(self, data: st.DataObject) -> None:
        irp = data.draw(st.sampled_from(sorted(self.in_flight, key=id)))
        routine = self.in_flight.pop(irp)
        routine(None, irp)
        assert self.done[irp] == [STATUS_CANCELLED]
        assert irp not in self.queue

    @rule(target=owned, peek=st.sampled_from((None, *FILES)))
    def remove_next(self, peek: FileObject | None) -> Irp:
        irp = self.queue.remove_next(peek)
        if irp is None:
            return None  # type: ignore[return-value]
        assert irp not in self.in_flight
        assert irp.cancel_routine is None
        assert not irp.completed
        if peek is not None:
            assert irp.current_stack_location.file_object == peek
        self.owned_irps.add(irp)
        return irp

    @rule(target=owned, irp=queued)
    def remove_specific(self, irp: Irp) -> Irp:
        ctx = self.contexts.get(irp)
        if ctx is None:
            return None  # type: ignore[return-value]
        expected = irp in self.queue and irp not in self.in_flight
        got = self.queue.remove(ctx)
        assert (got is irp) == expected
        if got is None:
            return None  # type: ignore[return-value]
        self.owned_irps.add(irp)
        return irp

    @rule(irp=consumes(owned), status=st.sampled_from([STATUS_SUCCESS, STATUS_CANCELLED]))
    def complete(self, irp: Irp | None, status: int) -> None:
        if irp is None or irp not in self.owned_irps:
            return
        self.owned_irps.discard(irp)
        complete_request(irp, status, 0)
        assert self.done[irp] == [status]

    @rule(file=st.sampled_from(FILES))
    def cleanup(self, file: FileObject) -> None:
        self.queue.complete_all(file)
        # 6.5: nothing of that file is left queued except IRPs whose cancel is in flight.
        assert all(
            irp.current_stack_location.file_object != file or irp in self.in_flight for irp in self.queue
        )

    @invariant()
    def consistent(self) -> None:
        for irp, done in self.done.items():
            assert len(done) <= 1, f"{irp!r} completed {len(done)} times"
            if irp in self.queue:
                assert not done, "a completed IRP is still queued"
                assert (irp.cancel_routine is None) == (irp in self.in_flight)
                ctx = self.contexts.get(irp)
                if ctx is not None:
                    assert ctx.irp is irp
            if irp.cancel and irp not in self.in_flight and irp not in self.owned_irps:
                assert irp not in self.queue, "a cancelled IRP was left queued"

    def teardown(self) -> None:
        for irp, routine in list(self.in_flight.items()):
            routine(None, irp)
        self.in_flight.clear()
        self.queue.complete_all()
        for irp in self.owned_irps:
            complete_request(irp, STATUS_SUCCESS, 0)
        assert len(self.queue) == 0
        for irp, done in self.done.items():
            assert len(done) == 1, f"{irp!r} was lost or completed twice: {done}"


TestCsqMachine = CsqMachine.TestCase
TestCsqMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


# -- with an event loop: a driver that holds reads -----------------------------------------------


@pytest.mark.anyio
async def test_held_reads_driver(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, anyio.create_task_group() as tg:
        results: list[bytes] = []

        async def reader() -> None:
            results.append(await handle.read(5))

        for _ in range(3):
            tg.start_soon(reader)

        async def producer() -> None:
            for word in (b"alpha", b"bravo", b"charlie"):
                await anyio.sleep(1)
                assert driver.push(word)

        tg.start_soon(producer)
    assert sorted(results) == [b"alpha", b"bravo", b"charl"]
    assert virtual_clock.now() == pytest.approx(3)


class BrokenCancel(HeldReads):
    """HeldReads whose queue's complete_canceled_irp raises."""

    def __init__(self) -> None:
        super().__init__()
        self.queue = IrpQueue(complete_canceled_irp=self.complete_canceled)

    def complete_canceled(self, irp: Irp) -> None:
        raise KeyError("complete_canceled_irp")


@pytest.mark.anyio
async def test_a_requester_is_not_left_waiting_by_a_raising_complete_canceled_irp(virtual_clock: VirtualClock) -> None:
    driver = BrokenCancel()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(5)
        seen: list[tuple[str, float]] = []

        async def requester() -> None:
            with pytest.raises(airp.NtStatusError) as caught:
                await request
            assert caught.value.status == STATUS_INTERNAL_ERROR
            seen.append(("requester", anyio.current_time()))

        async def canceller() -> None:
            await anyio.sleep(2)
            with pytest.raises(KeyError):
                cancel_irp(request.irp)  # the exception reaches whoever ran the callback
            seen.append(("canceller", anyio.current_time()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(requester)
            tg.start_soon(canceller)
        assert sorted(seen) == [("canceller", pytest.approx(2)), ("requester", pytest.approx(2))]
        assert len(driver.queue) == 0
        assert io.outstanding_requests() == []
    assert virtual_clock.now() == pytest.approx(2)  # the close waited for nothing
