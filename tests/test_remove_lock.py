"""Remove locks (reference 8.1): the bias, acquire and release, the refusal once removal has begun,
release_and_wait's shielded wait, hold() in both forms, tag tracking and the 0xC4 bug checks."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import nullcontext
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import airp
from airp import (
    STATUS_DELETE_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    BugCheckCode,
    NtStatusError,
    RemoveLock,
    RemoveLockStatistics,
    RemoveLockViolation,
)
from airp.testing import VirtualClock

C4 = BugCheckCode.DRIVER_VERIFIER_DETECTED_VIOLATION


def assert_c4(caught: pytest.ExceptionInfo[BugCheck], violation: RemoveLockViolation, lock: RemoveLock, tag: object) -> None:
    assert caught.value.code == C4
    assert caught.value.parameters == (int(violation), lock, tag, 0)
    assert caught.value.verifier_code == violation
    assert violation.name in caught.value.rule


# -- synchronous rules -----------------------------------------------------------------------------


def test_the_count_starts_at_the_bias() -> None:
    lock = RemoveLock("disk")
    assert lock.count == 1
    assert not lock.removed
    assert lock.holders == ()
    assert lock.name == "disk"
    assert lock.tracking
    assert lock.high_water_mark is None
    assert repr(lock) == "<RemoveLock 'disk' count=1 removed=False>"
    assert repr(RemoveLock()) == "<RemoveLock count=1 removed=False>"


def test_acquire_and_release_count_holders_with_multiplicity() -> None:
    lock = RemoveLock()
    assert lock.acquire("a") == STATUS_SUCCESS
    assert lock.acquire("b") == STATUS_SUCCESS
    assert lock.acquire("a") == STATUS_SUCCESS
    assert lock.count == 4
    assert sorted(lock.holders) == ["a", "a", "b"]  # type: ignore[type-var]
    lock.release("a")
    assert lock.count == 3
    assert sorted(lock.holders) == ["a", "b"]  # type: ignore[type-var]
    lock.release("b")
    lock.release("a")
    assert lock.count == 1
    assert lock.holders == ()


def test_the_default_tag_is_none() -> None:
    lock = RemoveLock()
    assert lock.acquire() == STATUS_SUCCESS
    assert lock.holders == (None,)
    lock.release()
    assert lock.count == 1


def test_releasing_a_tag_never_acquired_is_0xd5() -> None:
    lock = RemoveLock("disk")
    with pytest.raises(BugCheck) as caught:
        lock.release("ghost")
    assert_c4(caught, RemoveLockViolation.RELEASE_TAG_NOT_ACQUIRED, lock, "ghost")
    assert caught.value.parameters[0] == 0xD5
    assert "'ghost'" in caught.value.rule
    assert "tags held: none" in caught.value.rule
    assert lock.count == 1


def test_a_tag_mismatch_is_0xd5_and_names_the_tags_held() -> None:
    lock = RemoveLock()
    lock.acquire("read")
    lock.acquire("read")
    with pytest.raises(BugCheck) as caught:
        lock.release("write")
    assert_c4(caught, RemoveLockViolation.RELEASE_TAG_NOT_ACQUIRED, lock, "write")
    assert "'read' x2" in caught.value.rule
    # Nothing changed: the acquisitions held are still there.
    assert lock.count == 3
    assert lock.holders == ("read", "read")


def test_releasing_a_tag_twice_is_0xd5() -> None:
    lock = RemoveLock()
    lock.acquire("irp")
    lock.release("irp")
    with pytest.raises(BugCheck) as caught:
        lock.release("irp")
    assert caught.value.parameters[0] == 0xD5
    assert lock.count == 1


def test_without_tracking_tags_are_ignored_but_the_bias_is_guarded() -> None:
    lock = RemoveLock(tracking=False)
    assert not lock.tracking
    lock.acquire("a")
    lock.release("b")  # tags are not checked
    assert lock.count == 1
    assert lock.holders == ()
    with pytest.raises(BugCheck) as caught:
        lock.release("b")
    assert_c4(caught, RemoveLockViolation.BIAS_RELEASED, lock, "b")
    assert "bias" in caught.value.rule
    assert lock.count == 1


def test_the_high_water_mark_is_a_bug_check() -> None:
    lock = RemoveLock("disk", high_water_mark=2)
    assert lock.high_water_mark == 2
    lock.acquire(1)
    lock.acquire(2)
    with pytest.raises(BugCheck) as caught:
        lock.acquire(3)
    assert_c4(caught, RemoveLockViolation.HIGH_WATER_MARK_EXCEEDED, lock, 3)
    assert "high-water mark of 2" in caught.value.rule
    assert lock.count == 3
    assert lock.holders == (1, 2)
    lock.release(1)
    lock.acquire(3)  # two holders again: allowed
    assert lock.statistics().high_water == 2


@pytest.mark.parametrize("mark", [-1, 1.5, True])
def test_a_bad_high_water_mark_is_refused(mark: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        RemoveLock(high_water_mark=mark)


def test_statistics() -> None:
    lock = RemoveLock()
    lock.acquire("a")
    lock.acquire("a")
    lock.acquire("b")
    lock.release("a")
    stats = lock.statistics()
    assert isinstance(stats, RemoveLockStatistics)
    assert stats.count == 3
    assert not stats.removed
    assert dict(stats.holders) == {"a": 1, "b": 1}
    assert stats.high_water == 3
    assert stats.acquired == 3
    assert stats.refused == 0
    with pytest.raises(TypeError):
        stats.holders["c"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        stats.count = 0  # type: ignore[misc]
    lock.release("a")
    assert dict(stats.holders) == {"a": 1, "b": 1}  # a snapshot


def test_initialize_resets_a_lock_not_yet_removed() -> None:
    lock = RemoveLock()
    lock.acquire("a")
    lock.initialize()
    assert lock.count == 1
    assert lock.holders == ()
    assert lock.statistics() == RemoveLockStatistics(1, False, {}, 0, 0, 0)


def test_hold_with_acquires_and_releases() -> None:
    lock = RemoveLock()
    with lock.hold("irp") as held:
        assert held is lock
        assert lock.count == 2
        assert lock.holders == ("irp",)
    assert lock.count == 1


def test_hold_releases_on_an_exception() -> None:
    lock = RemoveLock()
    with pytest.raises(ValueError, match="boom"), lock.hold("irp"):
        raise ValueError("boom")
    assert lock.count == 1
    assert lock.holders == ()


def test_a_hold_can_be_entered_again() -> None:
    lock = RemoveLock()
    hold = lock.hold("irp")
    with hold, hold:
        assert lock.holders == ("irp", "irp")
    assert lock.count == 1
    assert "irp" in repr(hold)


def test_the_exports() -> None:
    assert airp.RemoveLock is RemoveLock
    assert RemoveLockViolation.RELEASE_TAG_NOT_ACQUIRED == 0xD5
    assert RemoveLockViolation.RELEASE_AND_WAIT_TAG_NOT_ACQUIRED == 0xD6
    assert RemoveLockViolation.REINITIALIZED_AFTER_RELEASE_AND_WAIT == 0xD7
    own = [v for v in RemoveLockViolation if v.name in ("BIAS_RELEASED", "RELEASE_AND_WAIT_TWICE", "HIGH_WATER_MARK_EXCEEDED")]
    assert len(own) == 3
    assert all(v > 0xA1B0_0000 for v in own)


# -- release_and_wait --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_after_removal_every_acquire_is_refused_and_the_count_restored() -> None:
    lock = RemoveLock("disk")
    lock.acquire("remove")
    await lock.release_and_wait("remove")
    assert lock.removed
    assert lock.count == 0
    for _ in range(3):
        assert lock.acquire("late") == STATUS_DELETE_PENDING
        assert lock.count == 0
    assert lock.holders == ()
    stats = lock.statistics()
    assert stats.refused == 3
    assert stats.acquired == 1
    assert stats.removed
    assert repr(lock) == "<RemoveLock 'disk' count=0 removed=True>"


@pytest.mark.anyio
async def test_refusal_while_holders_remain_leaves_the_count(virtual_clock: VirtualClock) -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    lock.acquire("io")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lock.release_and_wait, "remove")
        await anyio.sleep(1)
        assert lock.removed
        assert lock.count == 1  # "io" only: the bias and the remover's acquisition are gone
        assert lock.acquire("late") == STATUS_DELETE_PENDING
        assert lock.count == 1
        lock.release("io")
    assert lock.count == 0


@pytest.mark.anyio
async def test_release_and_wait_waits_for_every_holder(virtual_clock: VirtualClock) -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    released: list[tuple[str, float]] = []

    async def holder(tag: str, seconds: float) -> None:
        assert lock.acquire(tag) == STATUS_SUCCESS
        await anyio.sleep(seconds)
        released.append((tag, anyio.current_time()))
        lock.release(tag)

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder, "short", 2)
        tg.start_soon(holder, "long", 5)
        await anyio.sleep(0.5)
        assert lock.count == 4
        await lock.release_and_wait("remove")
        assert anyio.current_time() == 5
        assert released == [("short", 2), ("long", 5)]
        assert lock.count == 0


@pytest.mark.anyio
async def test_release_and_wait_with_no_other_holder_returns_at_once(virtual_clock: VirtualClock) -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    await lock.release_and_wait("remove")
    # No waiter was made and no time passed (that it is a checkpoint is the next test).
    assert anyio.current_time() == 0
    assert lock.count == 0
    assert lock._waiter is None


@pytest.mark.anyio
async def test_release_and_wait_with_no_other_holder_is_a_cancellation_point() -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lock.release_and_wait("remove")
    assert scope.cancelled_caught
    # The removal happened all the same.
    assert lock.removed
    assert lock.count == 0


@pytest.mark.anyio
async def test_release_and_wait_is_shielded_and_delivers_the_cancellation_after(virtual_clock: VirtualClock) -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    lock.acquire("io")
    after: list[str] = []

    async def holder() -> None:
        await anyio.sleep(5)
        lock.release("io")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        with anyio.move_on_after(1) as scope:
            await lock.release_and_wait("remove")
            after.append("not cancelled")
        assert scope.cancelled_caught
        assert after == []
        # The cancellation at t=1 did not cut the wait short: it ended when the holder released.
        assert anyio.current_time() == 5
        assert lock.count == 0


@pytest.mark.anyio
async def test_release_and_wait_twice_is_a_bug_check() -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    await lock.release_and_wait("remove")
    with pytest.raises(BugCheck) as caught:
        await lock.release_and_wait("remove")
    assert_c4(caught, RemoveLockViolation.RELEASE_AND_WAIT_TWICE, lock, "remove")
    assert lock.count == 0


@pytest.mark.anyio
async def test_release_and_wait_with_a_tag_not_held_is_0xd6() -> None:
    lock = RemoveLock()
    lock.acquire("io")
    with pytest.raises(BugCheck) as caught:
        await lock.release_and_wait("remove")
    assert_c4(caught, RemoveLockViolation.RELEASE_AND_WAIT_TAG_NOT_ACQUIRED, lock, "remove")
    assert "'io'" in caught.value.rule
    # Nothing changed: the lock is not removed, its count and holders are intact.
    assert not lock.removed
    assert lock.count == 2
    assert lock.acquire("more") == STATUS_SUCCESS


@pytest.mark.anyio
async def test_release_and_wait_without_tracking_and_without_a_holder() -> None:
    lock = RemoveLock(tracking=False)
    with pytest.raises(BugCheck) as caught:
        await lock.release_and_wait()
    assert_c4(caught, RemoveLockViolation.BIAS_RELEASED, lock, None)
    assert not lock.removed
    assert lock.count == 1
    lock.acquire()
    await lock.release_and_wait()
    assert lock.count == 0
    with pytest.raises(BugCheck) as caught:
        lock.release()
    assert caught.value.parameters[0] == RemoveLockViolation.BIAS_RELEASED


@pytest.mark.anyio
async def test_initialize_after_release_and_wait_is_0xd7() -> None:
    lock = RemoveLock()
    lock.acquire("remove")
    await lock.release_and_wait("remove")
    with pytest.raises(BugCheck) as caught:
        lock.initialize()
    assert_c4(caught, RemoveLockViolation.REINITIALIZED_AFTER_RELEASE_AND_WAIT, lock, None)
    assert lock.removed
    assert lock.acquire("late") == STATUS_DELETE_PENDING


@pytest.mark.anyio
async def test_async_hold_acquires_releases_and_is_refused_after_removal() -> None:
    lock = RemoveLock("disk")
    async with lock.hold("irp") as held:
        assert held is lock
        assert lock.count == 2
    assert lock.count == 1
    with pytest.raises(KeyError):
        async with lock.hold("irp"):
            raise KeyError("boom")
    assert lock.count == 1
    lock.acquire("remove")
    await lock.release_and_wait("remove")
    with pytest.raises(NtStatusError) as caught, lock.hold("late"):
        pytest.fail("entered a removed lock")
    refusals = [caught.value]
    with pytest.raises(NtStatusError) as caught:
        async with lock.hold("late"):
            pytest.fail("entered a removed lock")
    refusals.append(caught.value)
    for refusal in refusals:
        assert refusal.status == STATUS_DELETE_PENDING
        assert "remove lock 'disk'" in str(refusal)
    assert lock.count == 0
    assert lock.statistics().refused == 2


@pytest.mark.anyio
async def test_a_dispatch_routine_holding_the_lock(virtual_clock: VirtualClock) -> None:
    """The documented dispatch pattern: requests in progress finish before the removal returns,
    requests that arrive after it began complete with STATUS_DELETE_PENDING."""

    class Disk(airp.Driver):
        def __init__(self) -> None:
            super().__init__("disk")
            self.lock = RemoveLock("disk")

        @airp.dispatch(airp.IrpMajor.READ)
        async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            status = self.lock.acquire(irp)
            if status != STATUS_SUCCESS:
                airp.complete_request(irp, status, 0)
                return status
            try:
                await anyio.sleep(3)
                airp.complete_request(irp, STATUS_SUCCESS, 7)
                return STATUS_SUCCESS
            finally:
                self.lock.release(irp)

    driver = Disk()
    io = airp.IoManager()
    device = io.create_device(driver)

    async def read() -> int:
        irp = airp.Irp(device.stack_size)
        irp.next_stack_location.major = airp.IrpMajor.READ
        await airp.call_driver(device, irp)
        return (await irp).status

    results: list[int] = []

    async def read_into() -> None:
        results.append(await read())

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_into)
        await anyio.sleep(1)
        driver.lock.acquire("remove")
        await driver.lock.release_and_wait("remove")
        assert anyio.current_time() == 3
        results.append(await read())
    assert results == [STATUS_SUCCESS, STATUS_DELETE_PENDING]


# -- the model ---------------------------------------------------------------------------------------

TAGS = st.sampled_from(["a", "b", "c", None])


class RemoveLockMachine(RuleBasedStateMachine):
    """acquire / release / hold with random tags and one release_and_wait at a random point,
    against a model: count == 1 + held - (bias released), and a refusal never changes the count.

    release_and_wait runs as a task on an asyncio loop of the machine's own, pumped after every
    step: it must have returned exactly when the removal has begun and no holder is left.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = RemoveLock("model")
        self.held: Counter[object] = Counter()
        self.removed = False
        self.refused = 0
        self.acquired = 0
        self.loop = asyncio.new_event_loop()
        self.remover: asyncio.Task[None] | None = None

    def pump(self) -> None:
        for _ in range(3):
            self.loop.run_until_complete(asyncio.sleep(0))

    @rule(tag=TAGS)
    def acquire(self, tag: object) -> None:
        before = self.lock.count
        status = self.lock.acquire(tag)
        if self.removed:
            assert status == STATUS_DELETE_PENDING
            assert self.lock.count == before
            self.refused += 1
        else:
            assert status == STATUS_SUCCESS
            self.held[tag] += 1
            self.acquired += 1

    @rule(tag=TAGS)
    def release(self, tag: object) -> None:
        before = self.lock.count
        if self.held[tag]:
            self.lock.release(tag)
            self.held[tag] -= 1
        else:
            with pytest.raises(BugCheck) as caught:
                self.lock.release(tag)
            assert caught.value.parameters[0] == RemoveLockViolation.RELEASE_TAG_NOT_ACQUIRED
            assert self.lock.count == before
        self.pump()

    @rule(tag=TAGS, fail=st.booleans())
    def hold(self, tag: object, fail: bool) -> None:
        before = self.lock.count
        if self.removed:
            with pytest.raises(NtStatusError) as caught, self.lock.hold(tag):
                pass
            assert caught.value.status == STATUS_DELETE_PENDING
            self.refused += 1
        else:
            with pytest.raises(LookupError) if fail else nullcontext(), self.lock.hold(tag):
                assert self.lock.count == before + 1
                if fail:
                    raise LookupError
            self.acquired += 1
        assert self.lock.count == before

    @precondition(lambda self: not self.removed)
    @rule(tag=TAGS)
    def release_and_wait(self, tag: object) -> None:
        if not self.held[tag]:
            before = self.lock.count
            with pytest.raises(BugCheck) as caught:
                self.loop.run_until_complete(self.lock.release_and_wait(tag))
            assert caught.value.parameters[0] == RemoveLockViolation.RELEASE_AND_WAIT_TAG_NOT_ACQUIRED
            assert self.lock.count == before
            return
        self.remover = self.loop.create_task(self.lock.release_and_wait(tag))
        self.held[tag] -= 1
        self.removed = True
        self.pump()

    @precondition(lambda self: self.removed)
    @rule()
    def release_and_wait_again(self) -> None:
        with pytest.raises(BugCheck) as caught:
            self.loop.run_until_complete(self.lock.release_and_wait(None))
        assert caught.value.parameters[0] == RemoveLockViolation.RELEASE_AND_WAIT_TWICE

    @invariant()
    def count_matches_the_model(self) -> None:
        held = sum(self.held.values())
        assert self.lock.count == 1 + held - (1 if self.removed else 0)
        assert self.lock.removed == self.removed
        assert Counter(self.lock.holders) == +self.held

    @invariant()
    def statistics_match_the_model(self) -> None:
        stats = self.lock.statistics()
        assert dict(stats.holders) == dict(+self.held)
        assert stats.refused == self.refused
        assert stats.acquired == self.acquired

    @invariant()
    def the_remover_returns_exactly_when_the_last_holder_releases(self) -> None:
        if self.remover is not None:
            assert self.remover.done() == (self.lock.count == 0)
            if self.remover.done():
                assert self.remover.result() is None

    def teardown(self) -> None:
        try:
            if self.remover is not None:
                for tag, n in list(self.held.items()):
                    for _ in range(n):
                        self.lock.release(tag)
                self.pump()
                assert self.remover.done()
        finally:
            self.loop.close()


TestRemoveLockModel = RemoveLockMachine.TestCase
TestRemoveLockModel.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)


# -- a StartIo queue's removal (the loop bench_lifecycle measures) -----------------------------------
# (Its place is tests/test_device_teardown.py; it is here because this helper owned only this file.)


@pytest.mark.anyio
async def test_startio_removal_finishes_every_queued_irp_past_a_raising_upper_routine(virtual_clock: VirtualClock) -> None:
    """Removing a StartIo lane completes every queued IRP with the removal status, even when an
    upper completion routine raises (the first exception comes out at the end) and cancels
    another queued IRP meanwhile (its cancel routine takes and completes it; the removal leaves
    it alone)."""
    irps: list[airp.Irp] = []

    class Lower(airp.Driver):
        @airp.dispatch(airp.IrpMajor.READ)
        async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            return device.extension.start_packet(irp)  # type: ignore[no-any-return]

        async def routine(self, device: airp.DeviceObject, irp: airp.Irp) -> None:
            cancelled = await airp.wait_or_cancelled(irp, float("inf"))
            airp.complete_request(irp, airp.STATUS_CANCELLED if cancelled else STATUS_SUCCESS, 0)

    class Upper(airp.Driver):
        @airp.dispatch(airp.IrpMajor.READ)
        async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(self.done)
            assert device.lower_device is not None
            return await airp.call_driver(device.lower_device, irp)

        def done(self, device: airp.DeviceObject | None, irp: airp.Irp, context: object) -> int:
            if irp.pending_returned:
                irp.mark_pending()
            if irp is irps[1]:
                airp.cancel_irp(irps[2])  # still queued below: its stock cancel routine completes it
                raise LookupError("upper routine")
            return airp.STATUS_CONTINUE_COMPLETION

    lower_driver = Lower()
    io = airp.IoManager()
    lower = io.create_device(lower_driver)
    lower.extension = airp.StartIoQueue(lower, "io", lower_driver.routine)
    top = io.create_device(Upper())
    airp.attach_device(top, lower)

    async def run() -> None:
        async with airp.run_device(lower) as tasks:
            for _ in range(4):
                irp = airp.Irp(top.stack_size)
                irp.next_stack_location.major = airp.IrpMajor.READ
                await airp.call_driver(top, irp)
                irps.append(irp)
            await anyio.sleep(1)
            assert len(lower.extension.queue) == 3
            tasks.remove()

    with pytest.raises(LookupError, match="upper routine"):
        await run()
    assert all(irp.completed for irp in irps)
    assert [irp.status for irp in irps] == [
        airp.STATUS_CANCELLED,  # the one the routine held: cancelled, finished by the routine
        airp.STATUS_INTERNAL_ERROR,  # its upper routine raised
        airp.STATUS_CANCELLED,  # taken by its cancel routine during the removal
        airp.STATUS_NO_SUCH_DEVICE,
    ]
    assert isinstance(irps[1].routine_error, LookupError)
    assert len(lower.extension.queue) == 0
