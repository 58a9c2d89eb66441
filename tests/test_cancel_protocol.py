"""The cancel protocol (reference 6.1, 6.3) and its anyio mapping (6.6).

Sync tests run the sans-I/O machine without an event loop; async tests run on asyncio and trio,
each on a fresh virtual clock.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from _cancel_drivers import HeldReads, held_irp, make_io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_SUCCESS,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Driver,
    Irp,
    NtStatusError,
    VerifierCode,
    cancel_irp,
    complete_request,
)
from airp.testing import virtual_anyio_backend, wait_until_quiet

# -- 6.1 IoCancelIrp, sans-I/O -----------------------------------------------------------------


def _device() -> DeviceObject:
    return DeviceObject(Driver("d"))


def test_cancel_without_routine_sets_sticky_flag_and_returns_false() -> None:
    irp, done = held_irp(_device())
    assert cancel_irp(irp) is False
    assert irp.cancel is True
    complete_request(irp, STATUS_SUCCESS, 0)
    # The flag is sticky: completion does not clear it, and the driver's success status stands.
    assert irp.cancel is True
    assert done == [STATUS_SUCCESS]


def test_cancel_takes_the_routine_atomically_and_calls_it_with_the_current_device() -> None:
    device = _device()
    irp, done = held_irp(device)
    seen: list[tuple[Any, Irp, Any, bool]] = []

    def routine(dev: DeviceObject | None, irp: Irp) -> None:
        # Inside the routine the routine is already gone and the flag is set (6.2 step 1).
        seen.append((dev, irp, irp.cancel_routine, irp.cancel))
        complete_request(irp, STATUS_CANCELLED, 0)

    assert irp.set_cancel_routine(routine) is None
    assert cancel_irp(irp) is True
    assert seen == [(device, irp, None, True)]
    assert done == [STATUS_CANCELLED]
    # A second cancel finds no routine: False, and nothing runs twice.
    assert cancel_irp(irp) is False
    assert len(seen) == 1


def test_true_means_only_that_a_routine_ran() -> None:
    irp, done = held_irp(_device())
    irp.set_cancel_routine(lambda dev, irp: None)  # a routine that leaves the IRP alone
    assert cancel_irp(irp) is True
    assert not irp.completed
    complete_request(irp, STATUS_SUCCESS, 7)  # ... and the IRP may still succeed
    assert done == [STATUS_SUCCESS]


def test_set_cancel_routine_is_an_exchange() -> None:
    irp, _ = held_irp(_device())

    def a(dev: DeviceObject | None, irp: Irp) -> None: ...
    def b(dev: DeviceObject | None, irp: Irp) -> None: ...

    assert irp.set_cancel_routine(a) is None
    assert irp.set_cancel_routine(b) is a
    assert irp.set_cancel_routine(None) is b
    assert irp.set_cancel_routine(None) is None


def test_cancel_routine_on_completed_irp_is_bugcheck_0x48() -> None:
    irp, _ = held_irp(_device())
    complete_request(irp, STATUS_SUCCESS, 0)
    irp.set_cancel_routine(lambda dev, irp: None)
    with pytest.raises(BugCheck) as info:
        cancel_irp(irp)
    assert info.value.code == 0x48
    assert BugCheckCode(info.value.code) is BugCheckCode.CANCEL_STATE_IN_COMPLETED_IRP
    assert info.value.irp is irp


def test_complete_with_cancel_routine_set_is_refused_0xc9_0x07() -> None:
    irp, done = held_irp(_device())

    def routine(dev: DeviceObject | None, irp: Irp) -> None: ...

    irp.set_cancel_routine(routine)
    with pytest.raises(BugCheck) as info:
        complete_request(irp, STATUS_SUCCESS, 0)
    assert info.value.code == 0xC9
    assert info.value.parameters[0] == 0x07
    assert VerifierCode(info.value.parameters[0]) is VerifierCode.COMPLETE_WITH_CANCEL_ROUTINE
    assert info.value.parameters[1] is routine
    assert done == []
    assert not irp.completed


def test_cancel_routine_completing_twice_is_bugcheck_0x44() -> None:
    irp, done = held_irp(_device())

    def twice(dev: DeviceObject | None, irp: Irp) -> None:
        complete_request(irp, STATUS_CANCELLED, 0)
        complete_request(irp, STATUS_CANCELLED, 0)

    irp.set_cancel_routine(twice)
    with pytest.raises(BugCheck) as info:
        cancel_irp(irp)
    assert info.value.code == 0x44
    assert BugCheckCode(info.value.code) is BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert done == [STATUS_CANCELLED]  # the first completion did happen, once


def test_coroutine_cancel_routine_is_refused_by_set_cancel_routine() -> None:
    irp, _ = held_irp(_device())

    async def routine(dev: DeviceObject | None, irp: Irp) -> None: ...

    with pytest.raises(TypeError, match="plain function"):
        irp.set_cancel_routine(routine)  # type: ignore[arg-type]
    assert irp.cancel_routine is None


def test_coroutine_cancel_routine_stored_directly_fails_clearly_in_cancel() -> None:
    irp, _ = held_irp(_device())

    async def routine(dev: DeviceObject | None, irp: Irp) -> None: ...

    irp.cancel_routine = routine  # type: ignore[assignment]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(TypeError, match="coroutine function"):
            cancel_irp(irp)
        gc.collect()
    assert irp.cancel is True


def test_non_callable_cancel_routine_is_refused() -> None:
    irp, _ = held_irp(_device())
    with pytest.raises(TypeError):
        irp.set_cancel_routine(42)  # type: ignore[arg-type]


# -- 6.3 arm then re-check ------------------------------------------------------------------------


def test_mark_cancelable_on_live_irp_arms() -> None:
    irp, done = held_irp(_device())
    ran: list[Irp] = []

    def routine(dev: DeviceObject | None, irp: Irp) -> None:
        ran.append(irp)
        complete_request(irp, STATUS_CANCELLED, 0)

    assert airp.mark_irp_cancelable(irp, routine) == STATUS_SUCCESS
    assert irp.cancel_routine is routine
    cancel_irp(irp)
    assert ran == [irp]
    assert done == [STATUS_CANCELLED]


def test_mark_cancelable_after_cancel_gives_the_irp_back() -> None:
    irp, done = held_irp(_device())
    cancel_irp(irp)  # cancelled before the driver armed anything
    ran: list[Irp] = []
    assert airp.mark_irp_cancelable(irp, lambda dev, irp: ran.append(irp)) == STATUS_CANCELLED
    assert ran == []
    assert irp.cancel_routine is None
    complete_request(irp, STATUS_CANCELLED, 0)  # the driver's job now
    assert done == [STATUS_CANCELLED]


def test_unmark_cancelable() -> None:
    irp, _done = held_irp(_device())
    airp.mark_irp_cancelable(irp, lambda dev, irp: None)
    assert airp.unmark_irp_cancelable(irp) == STATUS_SUCCESS
    complete_request(irp, STATUS_SUCCESS, 0)
    irp2, _ = held_irp(_device())
    airp.mark_irp_cancelable(irp2, lambda dev, irp: None)
    cancel_irp(irp2)  # the routine was taken: the driver must leave the IRP alone
    assert airp.unmark_irp_cancelable(irp2) == STATUS_CANCELLED


def test_mark_cancelable_misuse() -> None:
    irp, _ = held_irp(_device())
    airp.mark_irp_cancelable(irp, lambda dev, irp: None)
    with pytest.raises(airp.IrpStateError, match="already has cancel routine"):
        airp.mark_irp_cancelable(irp, lambda dev, irp: None)
    airp.unmark_irp_cancelable(irp)
    complete_request(irp, STATUS_SUCCESS, 0)
    with pytest.raises(airp.IrpStateError, match="completed"):
        airp.mark_irp_cancelable(irp, lambda dev, irp: None)


# -- Hypothesis: interleavings of the whole protocol ------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("issue"), st.integers(0, 1), st.sampled_from([None, 1.0, 2.5])),
        st.tuples(st.just("cancel_requester"), st.integers(0, 15)),
        st.tuples(st.just("cancel_irp"), st.integers(0, 15)),
        st.tuples(st.just("push"), st.integers(0, 2)),
        st.tuples(st.just("close"), st.integers(0, 1)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0])),
        st.tuples(st.just("task_io_exit"),),
    ),
    max_size=30,
)


@dataclass
class _Requester:
    scope: anyio.CancelScope
    handle: int
    request: airp.Overlapped[bytes] | None = None
    outcome: str = "running"
    value: Any = None


@dataclass
class _World:
    requesters: list[_Requester] = field(default_factory=list)
    closed: set[int] = field(default_factory=set)


async def _run_program(ops: list[tuple[Any, ...]], clock: Any) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    completions: dict[Irp, int] = {}
    handles = [await io.open("\\Device\\Test") for _ in range(2)]
    world = _World()
    all_irps: list[Irp] = []

    async def requester(r: _Requester, deadline: float | None, task_status: Any) -> None:
        with r.scope:
            request = await handles[r.handle].read_overlapped(4)
            r.request = request
            irp = request.irp
            all_irps.append(irp)
            original = irp._final_stage

            def counting(irp: Irp) -> None:
                completions[irp] = completions.get(irp, 0) + 1
                if original is not None:
                    original(irp)

            irp._final_stage = counting
            task_status.started()
            try:
                if deadline is None:
                    r.value = await request
                else:
                    with anyio.fail_after(deadline):
                        r.value = await request
                r.outcome = "ok"
            except NtStatusError as exc:
                r.outcome = f"error {exc.status.name}"
            except TimeoutError:
                r.outcome = "timeout"
                assert irp.completed
        if r.outcome == "running":
            r.outcome = "cancelled"
            assert irp.completed

    async with anyio.create_task_group() as tg:
        async with airp.task_io():
            for op in ops:
                kind = op[0]
                if kind == "issue":
                    if op[1] in world.closed:
                        continue
                    r = _Requester(anyio.CancelScope(), op[1])
                    world.requesters.append(r)
                    await tg.start(requester, r, op[2])
                elif kind == "cancel_requester":
                    if op[1] < len(world.requesters):
                        world.requesters[op[1]].scope.cancel()
                elif kind == "cancel_irp":
                    if op[1] < len(all_irps):
                        cancel_irp(all_irps[op[1]])
                elif kind == "push":
                    driver.push(b"data", None if op[1] == 2 else handles[op[1]].file_object)
                elif kind == "close":
                    if op[1] not in world.closed:
                        world.closed.add(op[1])
                        await handles[op[1]].close()
                        # 6.5: every IRP of that handle has completed before close returns.
                        fo = handles[op[1]].file_object
                        assert all(irp.completed for irp in all_irps if irp.file_object is fo)
                        assert io.outstanding_requests(fo) == []
                elif kind == "advance":
                    clock.jump(op[1])
                elif kind == "task_io_exit":
                    break
                await wait_until_quiet()
        # Leaving task_io cancelled and waited for whatever was still held.
        assert all(irp.completed for irp in all_irps)
    for handle in handles:
        await handle.close()
    assert len(driver.queue) == 0
    # Every IRP completed exactly once; none lost; every requester finished.
    assert all(completions.get(irp) == 1 for irp in all_irps), completions
    for r in world.requesters:
        assert r.outcome != "running"
        assert r.request is not None
        irp = r.request.irp
        if r.outcome == "ok":
            assert irp.status == STATUS_SUCCESS
            assert r.value == b"data"
        elif r.outcome.startswith("error"):
            assert irp.status == STATUS_CANCELLED
        if irp.status == STATUS_SUCCESS:
            assert r.outcome in ("ok", "cancelled", "timeout")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_protocol_interleavings(backend: str, ops: list[tuple[Any, ...]]) -> None:
    name, options = virtual_anyio_backend(backend)
    clock = airp.testing.clock_of((name, options))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        anyio.run(_run_program, ops, clock, backend=name, backend_options=options)
