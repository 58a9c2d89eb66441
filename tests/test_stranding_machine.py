"""Nothing stranded (issue 8): every IRP a requester sends completes exactly once, whatever happens.

Two parts.

**The machine.**  A Hypothesis-generated program drives a 3-deep stack over two handles:

* ``Upper``: READ is ``forward_and_wait`` then ``complete_request`` (with optional work, an
  ``anyio.sleep``, before forwarding and after the IRP came back); DEVICE_CONTROL is skipped down
  (``pass_down``).
* ``Middle``: forwards both with a completion routine that propagates ``pending_returned`` (the
  asynchronous forward), after optional work of its own.
* ``Bottom``: pends both in an :class:`airp.IrpQueue` (or, per request, completes at once), and
  completes the oldest queued request when the program says so; CLEANUP drains the handle's.

Operations: READs in their own task (``read``, ``read_overlapped`` + await, under
``anyio.move_on_after`` or ``anyio.fail_after``); overlapped DEVICE_CONTROLs (they return
STATUS_PENDING through the skipping upper filter) awaited later by other tasks, with or without a
deadline; the bottom completing the oldest request; ``scope.cancel()`` of a requester;
``cancel_irp`` from outside; virtual time passing (``anyio.sleep`` or ``clock.jump``); routines
that raise (a one-shot flag armed for the next dispatch / completion / cancel routine at a given
point, or a request's own plan); closing a handle and opening a new one.

After every step, once the run is quiet: each IRP ever sent is either pending with a known holder
(in the bottom's queue, or in a running dispatch routine of the driver whose location it is at)
and listed by ``io.outstanding_requests()``, or completed exactly once (the middle filter's
completion routine ran at most once, once if the IRP went through it; with tracing on, the walk
reached the top once; no bug check anywhere) with a final status; a requester waiting for an IRP
is released exactly when the IRP is back, and one with a deadline exactly at the deadline.  At
the end every handle is closed, nothing is outstanding or disowned, and no warning was emitted
(no ``DriverCancelTimeoutWarning``: no cancel-wait limit expired).

Two raise points used to strand IRPs (bugs A and B below, fixed since); the machine arms them like
the others, and two tests after it keep them from the user's side.

**The examples.**  The five patterns of ``examples/`` with the requester wrapped in
``anyio.fail_after`` over a request its bottom driver pends and never completes on its own: the
requester gets ``TimeoutError`` at the deadline, nothing is left outstanding, and no
``DriverCancelTimeoutWarning`` is emitted.  Where an example's own driver cannot pend (it
completes at once) or pends without cancel support, its filter is put over a cancel-safe disk, and
the example's own stack is tested for what applies.

Every run is on a virtual clock, on asyncio and on trio.  Each Hypothesis example is one
``anyio.run`` (as in ``test_cancel_protocol.py``): the generated operations are executed in one
async function, with the invariants checked after each.
"""

from __future__ import annotations

import contextlib
import runpy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    DeviceObject,
    Irp,
    IrpMajor,
    IrpMonitor,
    NtStatus,
    NtStatusError,
    cancel_irp,
    complete_request,
)
from airp.testing import VirtualClock, clock_of, virtual_anyio_backend, wait_until_quiet

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

IOCTL_HELD = airp.ControlCode.make(0x22, 0x900, airp.TransferMethod.BUFFERED)
READ_DATA = b"data"
IOCTL_DATA = b"ctl!"
FINAL_STATUSES = frozenset((STATUS_SUCCESS, STATUS_CANCELLED, STATUS_INTERNAL_ERROR))


class MarkerError(Exception):
    """What a driver routine raises when the program has armed its raise point."""


# -- the stack ------------------------------------------------------------------------------------

#: Where a routine can be made to raise (one shot each time the point is armed).
#:
#: ``*_before``: a dispatch routine raises while it still holds the IRP (before passing it on);
#: ``*_after``: a dispatch routine raises after it passed the IRP on (or, for the upper filter's
#: READ, after the IRP came back to it and before it completed it); ``completion``: the middle
#: filter's completion routine raises; ``cancel``: the bottom queue's cancel callback raises.
RAISE_POINTS = (
    "upper_before",
    "upper_after",
    "middle_before",
    "middle_after",
    "bottom_before",
    "bottom_after",
    "completion",
    "cancel",
)


@dataclass(frozen=True)
class Plan:
    """What the drivers do with one request (drawn by Hypothesis)."""

    upper_pre: float = 0.0  # the upper filter works this long before forwarding
    middle_pre: float = 0.0  # the middle filter works this long before forwarding
    upper_post: float = 0.0  # the upper filter works this long on a READ that came back
    sync: bool = False  # the bottom completes it in its dispatch routine instead of queueing it
    raise_at: str | None = None  # the raise point that fires for this request (besides armed ones)


class CountingMonitor(IrpMonitor):
    """A tracing monitor that also counts, per IRP, how often the walk reached the top."""

    def __init__(self) -> None:
        super().__init__(capacity=64)
        self.done: dict[Irp, int] = {}

    def completed(self, irp: Irp) -> None:
        self.done[irp] = self.done.get(irp, 0) + 1
        super().completed(irp)


class World:
    """The program's bookkeeping, shared by the drivers and the requesters."""

    def __init__(self, *, known_strands: bool = True) -> None:
        #: Arm the raise points of bugs A and B (fixed; off only to narrow a failure down).
        self.known_strands = known_strands
        self.armed: dict[str, int] = {}
        self.plans: dict[int, Plan] = {}
        self.irps: dict[int, Irp] = {}  # request id -> its IRP, recorded by the first driver
        self.plan_of: dict[Irp, Plan] = {}
        self.errors: list[BaseException] = []  # exceptions nobody should ever see (bug checks ...)
        self.raised: list[str] = []  # the raise points that fired
        self.fired: set[tuple[Irp, str]] = set()  # (IRP, point) of each plan's own raise that fired
        self.in_cancel_routine = False  # the bottom queue's cancel routine is running

    def known_strand(self, point: str, irp: Irp, status: int | None) -> bool:
        """Whether raising at *point* hits where bugs A or B were (see the tests below).

        Both need the upper filter's READ path, whose ``forward_and_wait`` hand-back routine sits
        above the IRP (STATUS_MORE_PROCESSING_REQUIRED stops the completion walk there).
        """
        if irp.stack_location(irp.stack_count).major != IrpMajor.READ:
            return False
        if point in ("middle_after", "bottom_after") and status == STATUS_PENDING:
            # Bug A: forward_and_wait gives up on a pended IRP whose lower dispatch routine raised;
            # its hand-back routine then stops the walk for good.
            return True
        # Bug B: cancel_irp completes, a second time, an IRP that its raising cancel routine had
        # already completed up to the upper filter's hand-back.
        return point in ("cancel", "completion") and self.in_cancel_routine

    def arrived(self, rid: int, irp: Irp) -> Plan:
        assert rid not in self.irps, f"request {rid} sent twice"
        self.irps[rid] = irp
        plan = self.plans[rid]
        self.plan_of[irp] = plan
        return plan

    def maybe_raise(self, point: str, irp: Irp, status: int | None = None) -> None:
        plan = self.plan_of.get(irp)
        own = plan is not None and plan.raise_at == point and (irp, point) not in self.fired
        if not own and not self.armed.get(point):
            return
        if not self.known_strands and self.known_strand(point, irp, status):
            return
        if own:
            self.fired.add((irp, point))
        else:
            self.armed[point] -= 1
        self.raised.append(point)
        raise MarkerError(point)


class Upper(airp.Driver):
    """READ: ``forward_and_wait`` then ``complete_request``; DEVICE_CONTROL: skipped down."""

    pass_through = True

    def __init__(self, world: World) -> None:
        super().__init__("upper")
        self.world = world
        #: IRPs whose dispatch routine here is running (it completes them, or passes them on).
        self.active: set[Irp] = set()

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        plan = self.world.arrived(irp.current_stack_location.parameters.byte_offset, irp)
        self.active.add(irp)
        try:
            if plan.upper_pre:
                await anyio.sleep(plan.upper_pre)
            self.world.maybe_raise("upper_before", irp)
            result = await airp.forward_and_wait(device.lower_device, irp)
            if plan.upper_post:
                await anyio.sleep(plan.upper_post)
            self.world.maybe_raise("upper_after", irp)
            complete_request(irp, result.status, result.information)
            return result.status
        finally:
            self.active.discard(irp)

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def control(self, device: DeviceObject, irp: Irp) -> int:
        assert irp.system_buffer is not None
        plan = self.world.arrived(int.from_bytes(irp.system_buffer[:4], "little"), irp)
        self.active.add(irp)
        try:
            if plan.upper_pre:
                await anyio.sleep(plan.upper_pre)
            self.world.maybe_raise("upper_before", irp)
        finally:
            self.active.discard(irp)
        status = await airp.pass_down(device, irp)
        self.world.maybe_raise("upper_after", irp, status)
        return status


class Middle(airp.Driver):
    """Forwards READ and DEVICE_CONTROL with a completion routine that propagates pending."""

    pass_through = True

    def __init__(self, world: World) -> None:
        super().__init__("middle")
        self.world = world
        self.active: set[Irp] = set()
        self.forwarded: set[Irp] = set()
        #: How often the completion routine ran, per IRP: "completed exactly once" below the top.
        self.completions: dict[Irp, int] = {}

    def on_complete(self, device: DeviceObject | None, irp: Irp, context: Any) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        self.completions[irp] = self.completions.get(irp, 0) + 1
        self.world.maybe_raise("completion", irp)
        return STATUS_CONTINUE_COMPLETION

    @airp.dispatch(IrpMajor.READ, IrpMajor.DEVICE_CONTROL)
    async def forward(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        plan = self.world.plan_of[irp]
        self.active.add(irp)
        try:
            if plan.middle_pre:
                await anyio.sleep(plan.middle_pre)
            self.world.maybe_raise("middle_before", irp)
        finally:
            self.active.discard(irp)
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.on_complete)
        self.forwarded.add(irp)
        status = await airp.call_driver(device.lower_device, irp)
        self.world.maybe_raise("middle_after", irp, status)
        return status


class Bottom(airp.Driver):
    """Pends READ and DEVICE_CONTROL in an :class:`airp.IrpQueue` until told to complete them."""

    def __init__(self, world: World) -> None:
        super().__init__("bottom")
        self.world = world
        self.queue = airp.IrpQueue(complete_canceled_irp=self._complete_canceled)
        self._inserting = False

    def _complete_canceled(self, irp: Irp) -> None:
        # The queue has already taken the IRP out: as the queue's cancel routine, or inside
        # insert() for an IRP cancelled before the queue could arm it.
        world = self.world
        world.in_cancel_routine = not self._inserting
        try:
            world.maybe_raise("cancel", irp)
            complete_request(irp, STATUS_CANCELLED, 0)
        finally:
            world.in_cancel_routine = False

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.CLEANUP)
    async def cleanup(self, device: DeviceObject, irp: Irp) -> int:
        self.queue.complete_all(irp.current_stack_location.file_object)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ, IrpMajor.DEVICE_CONTROL)
    async def held(self, device: DeviceObject, irp: Irp) -> int:
        self.world.maybe_raise("bottom_before", irp)
        if self.world.plan_of[irp].sync:
            self._fill_and_complete(irp)
            status: int = STATUS_SUCCESS
        else:
            self._inserting = True
            try:
                status = self.queue.insert(irp)
            finally:
                self._inserting = False
        self.world.maybe_raise("bottom_after", irp, status)
        return status

    def _fill_and_complete(self, irp: Irp) -> None:
        data = READ_DATA if irp.current_stack_location.major == IrpMajor.READ else IOCTL_DATA
        assert irp.system_buffer is not None
        irp.system_buffer[: len(data)] = data
        complete_request(irp, STATUS_SUCCESS, len(data))

    def complete_oldest(self) -> Irp | None:
        irp = self.queue.remove_next()
        if irp is not None:
            self._fill_and_complete(irp)
        return irp


@dataclass
class Stack:
    io: airp.IoManager
    upper: Upper
    middle: Middle
    bottom: Bottom
    devices: dict[str, DeviceObject]
    monitor: CountingMonitor | None


def build_stack(world: World, *, trace: bool) -> Stack:
    monitor = CountingMonitor() if trace else None
    io = airp.IoManager(monitor=monitor)
    upper, middle, bottom = Upper(world), Middle(world), Bottom(world)
    bottom_device = io.create_device(bottom, "\\Device\\Held", flags=airp.DeviceFlags.BUFFERED_IO)
    middle_device = io.create_device(middle)
    airp.attach_device(middle_device, bottom_device)
    upper_device = io.create_device(upper)
    airp.attach_device(upper_device, middle_device)
    devices = {"upper": upper_device, "middle": middle_device, "bottom": bottom_device}
    return Stack(io, upper, middle, bottom, devices, monitor)


# -- requesters -----------------------------------------------------------------------------------


@dataclass
class Requester:
    """One task that sends a request, or awaits an overlapped one."""

    rid: int  # the request it sends or awaits
    kind: str  # "read" (sends a READ and waits), "ioctl" (sends a DEVICE_CONTROL, returns), "await"
    mode: str  # "plain", "overlapped", "move_on_after", "fail_after"
    delay: float | None
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    started_at: float = 0.0
    finished_at: float | None = None
    outcome: str = "running"
    value: Any = None
    error: BaseException | None = None
    request: airp.Overlapped[bytes] | None = None

    @property
    def done(self) -> bool:
        return self.outcome != "running"


async def _as_requester(world: World, r: Requester, body: Callable[[], Any]) -> None:
    """Run *body* under the requester's scope and deadline; record what the requester saw."""
    r.started_at = anyio.current_time()
    outcome = "running"
    try:
        with r.scope:
            try:
                if r.mode == "fail_after":
                    assert r.delay is not None
                    with anyio.fail_after(r.delay):
                        r.value = await body()
                    outcome = "ok"
                elif r.mode == "move_on_after":
                    assert r.delay is not None
                    with anyio.move_on_after(r.delay) as inner:
                        r.value = await body()
                        outcome = "ok"
                    if inner.cancelled_caught:
                        outcome = "moved_on"
                else:
                    r.value = await body()
                    outcome = "ok"
            except TimeoutError:
                outcome = "timeout"
            except NtStatusError as error:
                outcome, r.error = "status", error
            except MarkerError as error:
                outcome, r.error = "marker", error
            except ValueError as error:  # the handle was closed before the request was sent
                outcome, r.error = "closed", error
            except Exception as error:  # a bug check, or anything else nobody should see
                world.errors.append(error)
                outcome, r.error = "unexpected", error
        if r.scope.cancelled_caught:
            outcome = "cancelled"
    finally:
        r.finished_at = anyio.current_time()
        r.outcome = outcome if outcome != "running" else "cancelled"


# -- the program ------------------------------------------------------------------------------

DELAYS = st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0, 10.0])
WORK = st.sampled_from([0.0, 0.0, 0.0, 1.0, 3.0])
PLANS = st.builds(
    Plan,
    upper_pre=WORK,
    middle_pre=WORK,
    upper_post=WORK,
    sync=st.sampled_from([False, False, True]),
    raise_at=st.one_of(st.none(), st.none(), st.sampled_from(RAISE_POINTS)),
)
MODES = st.sampled_from(["plain", "overlapped", "move_on_after", "fail_after", "fail_after"])

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 1), MODES, DELAYS, PLANS),
        st.tuples(st.just("read"), st.integers(0, 1), MODES, DELAYS, PLANS),
        st.tuples(st.just("ioctl"), st.integers(0, 1), PLANS),
        st.tuples(st.just("await"), st.integers(0, 7), MODES, DELAYS),
        st.tuples(
            st.just("complete"),
        ),
        st.tuples(
            st.just("complete"),
        ),
        st.tuples(st.just("cancel_requester"), st.integers(0, 15)),
        st.tuples(st.just("cancel_irp"), st.integers(0, 15)),
        st.tuples(st.just("arm"), st.sampled_from(RAISE_POINTS)),
        st.tuples(st.just("arm"), st.sampled_from(RAISE_POINTS)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0, 10.0]), st.booleans()),
        st.tuples(st.just("close"), st.integers(0, 1)),
    ),
    min_size=5,
    max_size=40,
)


class Program:
    """Executes one list of operations on a fresh stack and checks the invariants after each."""

    def __init__(self, ops: list[tuple[Any, ...]], clock: VirtualClock, *, trace: bool, known_strands: bool) -> None:
        self.ops = ops
        self.clock = clock
        self.world = World(known_strands=known_strands)
        self.stack = build_stack(self.world, trace=trace)
        self.requesters: list[Requester] = []
        self.ioctls: list[Requester] = []  # the senders of overlapped DEVICE_CONTROL requests
        self.handles: list[airp.FileHandle] = []
        self.next_rid = 1
        self.jumps: list[tuple[float, float]] = []  # (from, to) of each clock.jump
        self.failure: AssertionError | None = None

    def _new_rid(self, plan: Plan) -> int:
        rid = self.next_rid
        self.next_rid += 1
        self.world.plans[rid] = plan
        return rid

    async def run(self) -> None:
        io = self.stack.io
        self.handles = [await io.open("\\Device\\Held") for _ in range(2)]
        async with anyio.create_task_group() as tg:
            try:
                for op in self.ops:
                    await self.step(tg, op)
                    await wait_until_quiet()
                    self.check()
                await self.teardown()
            except AssertionError as failure:
                # Reported by run_program as itself, not inside an exception group; the
                # requesters still running are cancelled.
                self.failure = failure
                tg.cancel_scope.cancel()

    async def step(self, tg: anyio.abc.TaskGroup, op: tuple[Any, ...]) -> None:
        kind = op[0]
        world, stack = self.world, self.stack
        if kind == "read":
            _, h, mode, delay, plan = op
            rid = self._new_rid(plan)
            handle = self.handles[int(h)]
            r = Requester(rid, "read", mode, delay if mode in ("move_on_after", "fail_after") else None)
            self.requesters.append(r)

            async def read() -> bytes:
                if r.mode == "overlapped":
                    request = r.request = await handle.read_overlapped(len(READ_DATA), offset=rid)
                    data: bytes = await request
                    return data
                return await handle.read(len(READ_DATA), offset=rid)

            tg.start_soon(_as_requester, world, r, read)
        elif kind == "ioctl":
            _, h, plan = op
            rid = self._new_rid(plan)
            handle = self.handles[int(h)]
            s = Requester(rid, "ioctl", "overlapped", None)
            self.requesters.append(s)
            self.ioctls.append(s)

            async def send() -> None:
                s.request = await handle.device_control_overlapped(
                    IOCTL_HELD, rid.to_bytes(4, "little"), len(IOCTL_DATA)
                )

            tg.start_soon(_as_requester, world, s, send)
        elif kind == "await":
            _, k, mode, delay = op
            if k >= len(self.ioctls) or self.ioctls[k].request is None:
                return
            request = self.ioctls[k].request
            assert request is not None
            a = Requester(self.ioctls[k].rid, "await", mode, delay if mode in ("move_on_after", "fail_after") else None)
            a.request = request
            self.requesters.append(a)

            async def wait() -> bytes:
                data: bytes = await request
                return data

            tg.start_soon(_as_requester, world, a, wait)
        elif kind == "complete":
            # If the middle filter's completion routine raises, the completer gets it.
            with contextlib.suppress(MarkerError):
                stack.bottom.complete_oldest()
        elif kind == "cancel_requester":
            if op[1] < len(self.requesters):
                self.requesters[op[1]].scope.cancel()
        elif kind == "cancel_irp":
            irps = list(world.irps.values())
            if op[1] < len(irps):
                # If a cancel (or completion) routine raises, the canceller gets it.
                with contextlib.suppress(MarkerError):
                    cancel_irp(irps[op[1]])
        elif kind == "arm":
            world.armed[op[1]] = world.armed.get(op[1], 0) + 1
        elif kind == "advance":
            _, seconds, jump = op
            if jump:
                now = anyio.current_time()
                self.jumps.append((now, now + seconds))
                self.clock.jump(seconds)
            else:
                await anyio.sleep(seconds)
        elif kind == "close":
            await self.close(op[1])
            self.handles[op[1]] = await stack.io.open("\\Device\\Held")
        else:  # pragma: no cover
            raise AssertionError(op)

    async def close(self, h: int) -> None:
        handle = self.handles[int(h)]
        # A routine may raise during CLEANUP (a drained IRP's completion, a cancel callback): close
        # still closes the handle, then raises it.
        with contextlib.suppress(MarkerError):
            await handle.close()
        # Reference 6.5: once close returns, every request of the handle has completed.
        fo = handle.file_object
        assert self.stack.io.outstanding_requests(fo) == []
        assert all(irp.completed for irp in self.world.irps.values() if irp.file_object is fo)

    async def teardown(self) -> None:
        self.world.armed.clear()
        for h in range(len(self.handles)):
            await self.close(h)
        await wait_until_quiet()
        self.check()
        stack = self.stack
        assert [r for r in self.requesters if not r.done] == []
        assert stack.io.outstanding_requests() == []
        assert len(stack.bottom.queue) == 0
        assert all(irp.completed for irp in self.world.irps.values())
        assert not any(airp.is_disowned(irp) for irp in self.world.irps.values())

    def holder(self, irp: Irp) -> str:
        """Who holds a pending IRP: the driver of its current location, which must know it."""
        device = irp.current_stack_location.device
        stack = self.stack
        if device is stack.devices["bottom"]:
            assert irp in stack.bottom.queue, f"{irp!r} is at the bottom driver's location but not in its queue"
            return "bottom queue"
        if device is stack.devices["middle"]:
            assert irp in stack.middle.active, f"{irp!r} is at the middle filter's location, whose routine has returned"
            return "middle"
        if device is stack.devices["upper"]:
            assert irp in stack.upper.active, f"{irp!r} is at the upper filter's location, whose routine has returned"
            return "upper"
        raise AssertionError(f"{irp!r} is held by {device!r}, which is not in the stack")

    def check(self) -> None:
        """The invariants, checked after every step once the run is quiet."""
        world, stack = self.world, self.stack
        assert world.errors == []
        outstanding = set(stack.io.outstanding_requests())
        for irp in world.irps.values():
            below = stack.middle.completions.get(irp, 0)
            assert below <= 1, f"{irp!r}: the middle filter's completion routine ran {below} times"
            assert not airp.is_disowned(irp)
            if irp.completed:
                # Completed exactly once.
                assert irp not in outstanding
                assert irp not in stack.bottom.queue
                if irp in stack.middle.forwarded:
                    assert below == 1, f"{irp!r} completed without passing the middle filter's routine"
                if stack.monitor is not None:
                    assert stack.monitor.done.get(irp) == 1
                assert NtStatus(irp.status) in FINAL_STATUSES, irp
                # Nobody is blocked on it (white box: the requester's event, if any, is set).
                waiter: Any = irp._waiter
                assert waiter is None or waiter.is_set()
            else:
                # Pending, with a known holder that will complete it.
                self.holder(irp)
                assert irp in outstanding
                if stack.monitor is not None:
                    assert stack.monitor.done.get(irp, 0) == 0
        for r in self.requesters:
            sent = world.irps.get(r.rid)
            if r.outcome == "closed":
                assert "closed" in str(r.error), r.error
            if sent is None:
                # Sent nothing: its handle was closed, or it was cancelled before it could send.
                assert r.kind != "await"
                assert r.outcome in ("running", "closed", "cancelled", "timeout", "moved_on"), r
                continue
            irp = sent
            if r.kind in ("read", "await"):
                # A waiter is released exactly when its IRP is back, never before, never later.
                assert r.done == irp.completed, (r, irp)
            if not r.done:
                continue
            if r.outcome == "ok" and r.kind != "ioctl":
                assert irp.status == STATUS_SUCCESS
                assert r.value == (READ_DATA if r.kind == "read" else IOCTL_DATA)
            elif r.outcome == "status":
                assert isinstance(r.error, NtStatusError)
                assert r.error.status == irp.status
            elif r.outcome == "marker" and r.kind != "ioctl":
                # A routine raised while it held the IRP: completed with STATUS_INTERNAL_ERROR,
                # and the exception reached the requester.
                assert irp.status == STATUS_INTERNAL_ERROR
            if r.outcome in ("timeout", "moved_on"):
                # Released at the deadline: the drivers' waits gave the IRP back then (airp's
                # waits cancel it, their other awaits are cancelled), never a cancel-wait limit.
                assert r.delay is not None
                assert r.finished_at is not None
                deadline = r.started_at + r.delay
                assert deadline <= r.finished_at <= self.when_timers_fire(deadline), r

    def when_timers_fire(self, deadline: float) -> float:
        """When a timer due at *deadline* fires: then, or at the end of a clock jump over it."""
        for start, end in self.jumps:
            if start < deadline <= end:
                return end
        return deadline


async def _run_program(ops: list[tuple[Any, ...]], clock: VirtualClock, trace: bool, known_strands: bool) -> Program:
    program = Program(ops, clock, trace=trace, known_strands=known_strands)
    await program.run()
    return program


def run_program(
    backend: str, ops: list[tuple[Any, ...]], *, trace: bool = False, known_strands: bool = False
) -> Program:
    name, options = virtual_anyio_backend(backend)
    clock = clock_of((name, options))
    assert clock is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program: Program = anyio.run(
            _run_program, ops, clock, trace, known_strands, backend=name, backend_options=options
        )
    if program.failure is not None:
        raise program.failure
    # No cancel-wait limit expired (no DriverCancelTimeoutWarning), nor any other warning.
    assert [str(w.message) for w in caught] == []
    return program


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, trace=st.booleans())
def test_nothing_is_stranded(backend: str, ops: list[tuple[Any, ...]], trace: bool) -> None:
    run_program(backend, ops, trace=trace)


# Hand-written programs: each path of the machine at least once, whatever Hypothesis draws.
SCENARIOS: dict[str, list[tuple[Any, ...]]] = {
    "deadline_while_queued": [("read", 0, "fail_after", 2.5, Plan()), ("advance", 3.0, False)],
    "deadline_while_filters_work": [
        ("read", 0, "fail_after", 0.5, Plan(upper_pre=1.0, middle_pre=1.0, upper_post=1.0)),
        ("advance", 10.0, False),
    ],
    "deadline_after_the_bottom_completed": [
        ("read", 0, "move_on_after", 2.5, Plan(upper_post=3.0)),
        ("complete",),
        ("advance", 10.0, False),
    ],
    "explicit_cancel_while_queued": [
        ("read", 0, "plain", 0.0, Plan()),
        ("cancel_requester", 0),
        ("advance", 10.0, False),
        ("complete",),
    ],
    "overlapped_ioctl_awaited_with_deadline": [
        ("ioctl", 1, Plan()),
        ("await", 0, "fail_after", 1.0),
        ("advance", 3.0, True),
    ],
    "each_routine_raises": [
        ("arm", "upper_before"),
        ("read", 0, "plain", 0.0, Plan()),
        ("arm", "upper_after"),
        ("read", 0, "fail_after", 5.0, Plan()),
        ("complete",),
        ("arm", "middle_before"),
        ("read", 0, "overlapped", 0.0, Plan()),
        ("arm", "bottom_before"),
        ("read", 1, "plain", 0.0, Plan()),
        ("arm", "middle_after"),
        ("read", 1, "plain", 0.0, Plan(sync=True)),
        ("arm", "bottom_after"),
        ("ioctl", 1, Plan()),
        ("arm", "completion"),
        ("read", 1, "move_on_after", 5.0, Plan()),
        ("complete",),
        ("ioctl", 0, Plan()),
        ("arm", "cancel"),
        ("await", 1, "fail_after", 1.0),
        ("advance", 2.0, False),
    ],
    "cancel_routine_raises_in_the_requesters_cancel_wait": [
        ("ioctl", 0, Plan()),
        ("await", 0, "fail_after", 1.0),
        ("arm", "cancel"),
        ("advance", 2.0, False),
    ],
    "completion_routine_raises_during_cleanup": [
        ("read", 0, "plain", 0.0, Plan()),
        ("ioctl", 0, Plan()),
        ("arm", "completion"),
        ("close", 0),
    ],
    "close_while_a_filter_works": [
        ("read", 0, "plain", 0.0, Plan(middle_pre=3.0)),
        ("close", 0),
        ("read", 0, "fail_after", 1.0, Plan()),
    ],
    "explicit_cancel_of_an_awaiter": [("ioctl", 0, Plan()), ("await", 0, "plain", 0.0), ("cancel_requester", 1)],
    "cancel_irp_before_the_queue_gets_it": [
        ("read", 0, "plain", 0.0, Plan(middle_pre=1.0)),
        ("cancel_irp", 0),
        ("advance", 2.0, False),
    ],
    "cancel_callback_raises_in_insert": [
        ("read", 0, "plain", 0.0, Plan(middle_pre=1.0, raise_at="cancel")),
        ("cancel_irp", 0),
        ("advance", 2.0, False),
    ],
}


C, E, S = STATUS_CANCELLED, STATUS_INTERNAL_ERROR, STATUS_SUCCESS
#: What each scenario's requesters see, in order, and their IRPs' final statuses.
SCENARIO_OUTCOMES: dict[str, list[tuple[str, int]]] = {
    "deadline_while_queued": [("timeout", C)],
    "deadline_while_filters_work": [("timeout", C)],
    # The upper filter's own await (its work on the result) is cancelled at the deadline, with the
    # IRP in hand: call_driver completes it as cancelled.
    "deadline_after_the_bottom_completed": [("moved_on", C)],
    "explicit_cancel_while_queued": [("cancelled", C)],
    "overlapped_ioctl_awaited_with_deadline": [("ok", C), ("timeout", C)],
    "each_routine_raises": [
        ("marker", E),  # upper_before
        ("marker", E),  # upper_after
        ("marker", E),  # middle_before
        ("marker", E),  # bottom_before
        ("marker", E),  # middle_after (the READ completed at once)
        ("marker", E),  # bottom_after: the sender gets it, the IOCTL stays queued...
        ("status", C),  # ... is then completed, and its completion routine raises; this one is closed
        ("ok", E),  # the next IOCTL ...
        ("marker", E),  # ... whose awaiter's deadline runs the raising cancel callback
    ],
    "cancel_routine_raises_in_the_requesters_cancel_wait": [("ok", E), ("marker", E)],
    "completion_routine_raises_during_cleanup": [("status", E), ("ok", C)],
    "close_while_a_filter_works": [("status", C), ("status", C)],
    "explicit_cancel_of_an_awaiter": [("ok", C), ("cancelled", C)],
    "cancel_irp_before_the_queue_gets_it": [("status", C)],
    # The queue completes the IRP it took out when its callback raises; the exception reaches the
    # requester through the dispatch routines.
    "cancel_callback_raises_in_insert": [("marker", E)],
}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str, backend: str) -> None:
    program = run_program(backend, SCENARIOS[name], trace=True)
    seen = [(r.outcome, program.world.irps[r.rid].status) for r in program.requesters]
    assert seen == SCENARIO_OUTCOMES[name]


def test_each_routine_raises_scenario_fires_every_point() -> None:
    program = run_program("asyncio", SCENARIOS["each_routine_raises"])
    assert sorted(program.world.raised) == sorted(RAISE_POINTS)
    outcomes = [r.outcome for r in program.requesters]
    assert outcomes.count("marker") >= 5, outcomes


# -- what the machine finds: airp bugs, shown from the user's side ------------------------------

# Bug A.  A dispatch routine below forward_and_wait (call_driver_and_wait) raises after its IRP
# was pended (queued by the bottom, or passed down by the middle filter and pended there).  The
# (Fixed: call_driver_and_wait now gets the IRP back before the exception goes on, and
# _cancel_routine_raised completes only an IRP still at the routine's location.  As it was:) The
# exception propagates out of call_driver_and_wait's ``await call_driver(...)`` with its hand-back
# completion routine still armed on the IRP, through the upper filter's dispatch routine (which no
# longer holds the IRP, so call_driver does not complete it) to the requester, who is released
# while its IRP is pending.  When the bottom completes the IRP later, the hand-back routine returns
# STATUS_MORE_PROCESSING_REQUIRED and the walk stops at the upper filter's location for good: the
# IRP stays outstanding, and closing the handle waits a whole cancel-wait limit and then reports a
# DriverCancelTimeoutWarning.
BUG_A = (
    "a lower dispatch routine raising after it pended its IRP leaves forward_and_wait's hand-back"
    " routine armed: the requester is released early and the IRP never completes (stuck at the upper filter)"
)

# Bug B.  cancel_irp's handler for a raising cancel routine (airp/_cancel.py,
# _cancel_routine_raised) completes the IRP unless it has reached the top.  But the routine may
# have completed it as far as an upper driver's STATUS_MORE_PROCESSING_REQUIRED (forward_and_wait's
# hand-back): the IRP then belongs to that driver, yet airp completes it from its location.  Both
# ways in: the queue's cancel callback raises (the queue completes the IRP with
# STATUS_INTERNAL_ERROR, correctly checking the location, then re-raises), or a completion routine
# raises during the cancel routine's walk.  When the upper filter then completes its IRP, as
# forward_and_wait's contract says it must, that is bug check 0x44, raised to the requester.
# (Cancelled by the upper filter's own wait, the IRP is completed behind its back instead.)
BUG_B = (
    "cancel_irp completes again an IRP whose raising cancel routine had completed it up to an upper"
    " driver's STATUS_MORE_PROCESSING_REQUIRED: the upper filter's own complete_request is bug check 0x44"
)


@pytest.mark.anyio
@pytest.mark.parametrize("point", ["bottom_after", "middle_after"])
async def test_a_routine_raising_after_its_irp_pended_below_forward_and_wait_strands_it(
    point: str, virtual_clock: VirtualClock
) -> None:
    world = World(known_strands=True)
    stack = build_stack(world, trace=False)
    handle = await stack.io.open("\\Device\\Held")
    world.plans[1] = Plan(raise_at=point)  # the bottom (or middle) raises once the IRP is queued
    seen: dict[str, Any] = {}

    async def requester() -> None:
        try:
            seen["data"] = await handle.read(len(READ_DATA), offset=1)
        except Exception as error:
            seen["error"] = error

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await wait_until_quiet()
        irp = world.irps[1]
    # forward_and_wait got the IRP back (cancelled) before letting the exception out, and the
    # upper filter's call_driver completed it: nothing is left queued below.
    assert irp not in stack.bottom.queue
    assert irp.completed, f"{irp!r} is stuck at {irp.current_stack_location.device!r}, whose routine has returned"
    assert isinstance(seen.get("error"), (MarkerError, NtStatusError))
    await handle.close()
    assert stack.io.outstanding_requests() == []


@pytest.mark.anyio
@pytest.mark.parametrize("point", ["cancel", "completion"])
async def test_a_routine_raising_in_a_cancel_below_forward_and_wait_gets_its_irp_completed_twice(
    point: str, virtual_clock: VirtualClock
) -> None:
    world = World(known_strands=True)
    stack = build_stack(world, trace=True)
    handle = await stack.io.open("\\Device\\Held")
    # "cancel": the queue's cancel callback raises; "completion": the middle filter's completion
    # routine raises during the walk the cancel starts.
    world.plans[1] = Plan(raise_at=point)
    seen: dict[str, Any] = {}

    async def requester() -> None:
        try:
            seen["data"] = await handle.read(len(READ_DATA), offset=1)
        except Exception as error:
            seen["error"] = error

    async with anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await wait_until_quiet()
        irp = world.irps[1]
        with pytest.raises(MarkerError):
            cancel_irp(irp)  # IoCancelIrp from another party (CancelIoEx on the handle, say)
    error = seen.get("error")
    assert not isinstance(error, BugCheck), f"the upper filter's complete_request: {error}"
    assert isinstance(error, NtStatusError)
    assert error.status == STATUS_INTERNAL_ERROR
    await handle.close()


# The same two bugs, as the machine finds them (its invariants name them).
KNOWN_STRANDS: dict[str, list[tuple[Any, ...]]] = {
    "A_bottom_raises_after_pending": [("read", 0, "plain", 0.0, Plan(raise_at="bottom_after")), ("complete",)],
    "A_middle_raises_after_pending": [("read", 0, "plain", 0.0, Plan(raise_at="middle_after")), ("complete",)],
    "B_cancel_callback_raises": [("read", 0, "plain", 0.0, Plan(raise_at="cancel")), ("cancel_irp", 0)],
    "B_completion_raises_in_cleanup": [
        ("read", 0, "plain", 0.0, Plan()),
        ("read", 0, "plain", 0.0, Plan(raise_at="completion")),
        ("read", 0, "plain", 0.0, Plan(raise_at="completion")),
        ("close", 0),
    ],
}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", sorted(KNOWN_STRANDS))
def test_the_machine_with_the_known_strands_armed(name: str, backend: str) -> None:
    run_program(backend, KNOWN_STRANDS[name], trace=True, known_strands=True)


# -- the five patterns of examples/ under fail_after -------------------------------------------


def example(name: str) -> dict[str, Any]:
    """The namespace of ``examples/<name>.py`` (as tests/test_examples.py loads them)."""
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"airp_example_{name}")


class HeldRequests(airp.Driver):
    """A cancel-safe disk that never completes a READ, WRITE or DEVICE_CONTROL on its own.

    It stands under an example's filter where the example's own bottom driver cannot pend (it
    completes everything at once) or pends without any cancel support (its controller task is the
    only thing that ever completes a request).
    """

    def __init__(self) -> None:
        super().__init__("held-requests")
        self.queue = airp.IrpQueue()
        self.seen: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.CLEANUP)
    async def cleanup(self, device: DeviceObject, irp: Irp) -> int:
        self.queue.complete_all(irp.current_stack_location.file_object)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE, IrpMajor.DEVICE_CONTROL)
    async def held(self, device: DeviceObject, irp: Irp) -> int:
        self.seen.append(irp)
        return self.queue.insert(irp)


def filter_over_held(
    filter_driver: airp.Driver, flags: int = airp.DeviceFlags.BUFFERED_IO
) -> tuple[airp.IoManager, HeldRequests]:
    io = airp.IoManager()
    held = HeldRequests()
    disk = io.create_device(held, "\\Device\\Held", flags=flags)
    airp.attach_device(io.create_device(filter_driver), disk)
    return io, held


async def times_out_at(deadline: float, call: Callable[[], Any], clock: VirtualClock) -> None:
    """``with fail_after(deadline): await call()`` raises TimeoutError exactly at the deadline."""
    start = clock.now()
    with pytest.raises(TimeoutError):
        with anyio.fail_after(deadline):
            await call()
    assert clock.now() == pytest.approx(start + deadline)


@pytest.mark.anyio
async def test_complete_here_cannot_pend_so_fail_after_never_fires(virtual_clock: VirtualClock) -> None:
    # Greeter completes every request inside its dispatch routine: it cannot be made to pend.
    # What applies: under a deadline the requests complete at once, with no checkpoint, and a
    # requester already past its deadline sends nothing at all.
    ns = example("complete_here")
    io = airp.IoManager()
    greeter = ns["Greeter"]()
    io.create_device(greeter, "\\Device\\Greeter", flags=airp.DeviceFlags.BUFFERED_IO)
    async with await io.open("\\Device\\Greeter") as handle:
        with anyio.fail_after(1):
            assert await handle.read(5) == b"hello"
            assert await handle.device_control(ns["IOCTL_UPPER"], b"shh", 8) == b"SHH"
        assert virtual_clock.now() == 0
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0):
                await handle.read(5)
        assert greeter.seen == ["CREATE", "READ", "DEVICE_CONTROL"]
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_pend_and_complete_later_times_out_at_the_deadline(virtual_clock: VirtualClock) -> None:
    ns = example("pend_and_complete_later")
    io = airp.IoManager()
    mailbox = ns["Mailbox"]()
    io.create_device(mailbox, "\\Device\\Mailbox")
    async with await io.open("\\Device\\Mailbox") as handle:
        # No message ever arrives: the read pends until the deadline cancels it.
        await times_out_at(2, lambda: handle.read(16), virtual_clock)
        assert len(mailbox.pending_reads) == 0
        assert io.outstanding_requests() == []
        # Overlapped: sent first, awaited under the deadline.
        request = await handle.read_overlapped(16)
        assert request.status_returned == STATUS_PENDING
        await times_out_at(1.5, lambda: request, virtual_clock)
        assert request.irp.status == STATUS_CANCELLED
        assert len(mailbox.pending_reads) == 0
        assert io.outstanding_requests() == []
    assert virtual_clock.now() == pytest.approx(3.5)  # close waited for nothing


@pytest.mark.anyio
async def test_skip_and_pass_down_times_out_at_the_deadline(virtual_clock: VirtualClock) -> None:
    # The example's RamDisk completes everything at once (it cannot pend; see the next test), so
    # the example's Counter filter sits here over a disk that holds every request.
    counter = example("skip_and_pass_down")["Counter"]()
    io, held = filter_over_held(counter)
    async with await io.open("\\Device\\Held") as handle:
        await times_out_at(1.5, lambda: handle.read(7, offset=8), virtual_clock)  # airp.pass_down
        await times_out_at(1.5, lambda: handle.write(b"skip me", offset=8), virtual_clock)  # skipped by hand
        assert counter.counts == {"READ": 1, "WRITE": 1}
        assert [irp.status for irp in held.seen] == [STATUS_CANCELLED, STATUS_CANCELLED]
        assert len(held.queue) == 0
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_skip_and_pass_down_example_stack_completes_before_any_deadline(virtual_clock: VirtualClock) -> None:
    ns = example("skip_and_pass_down")
    io = airp.IoManager()
    disk = io.create_device(ns["RamDisk"](64), "\\Device\\RamDisk", flags=airp.DeviceFlags.BUFFERED_IO)
    airp.attach_device(io.create_device(ns["Counter"]()), disk)
    async with await io.open("\\Device\\RamDisk") as handle:
        with anyio.fail_after(1):
            assert await handle.write(b"skip me", offset=8) == 7
            assert await handle.read(7, offset=8) == b"skip me"
        assert virtual_clock.now() == 0
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_forward_and_wait_read_times_out_and_the_filter_finishes_it(virtual_clock: VirtualClock) -> None:
    # The example's Disk pends without a cancel routine (only its controller task completes
    # requests), so the Encryptor sits here over a cancel-safe disk that holds every request.
    io, held = filter_over_held(example("forward_and_wait")["Encryptor"]())
    async with await io.open("\\Device\\Held") as handle:
        await times_out_at(2, lambda: handle.read(14), virtual_clock)
        [irp] = held.seen
        # forward_and_wait got it back cancelled; the Encryptor completed it with that status.
        assert irp.completed
        assert irp.status == STATUS_CANCELLED
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_forward_and_wait_write_by_hand_times_out_at_the_deadline(virtual_clock: VirtualClock) -> None:
    # The example's by-hand idiom, interrupted in its wait, cancels the IRP and waits for it to
    # come back, as Windows' interrupted wait does; the filter is then left holding it and airp
    # completes it as cancelled.  (A shielded wait, tried once, never let the deadline fire.)
    io, held = filter_over_held(example("forward_and_wait")["Encryptor"]())
    outcome: list[tuple[str, float]] = []

    async def requester() -> None:
        try:
            with anyio.fail_after(2):
                await handle.write(b"attack at dawn")
            outcome.append(("written", virtual_clock.now()))
        except TimeoutError:
            outcome.append(("timeout", virtual_clock.now()))

    async with await io.open("\\Device\\Held") as handle, anyio.create_task_group() as tg:
        tg.start_soon(requester)
        await anyio.sleep(10)
        at_ten = list(outcome)
        [irp] = held.seen
        cancelled_at_ten = irp.cancel
        held.queue.complete_all()  # release the write, so that this test ends either way
    assert at_ten == [("timeout", 2.0)], f"at t=10 the requester saw {at_ten}; irp.cancel={cancelled_at_ten}"
    assert io.outstanding_requests() == []


async def slow_controller(disk: Any, requests: anyio.abc.ObjectReceiveStream[Irp]) -> None:
    """The examples' disk controller, taking 3 s per request and ignoring cancels meanwhile."""
    async with requests:
        async for irp in requests:
            await anyio.sleep(3)
            disk.perform(irp)


@pytest.mark.anyio
async def test_forward_and_wait_example_disk_is_slow(virtual_clock: VirtualClock) -> None:
    # The example's own Disk ignores cancels: a requester past its deadline is released when the
    # controller has completed the request (3 s after it was sent), well within the cancel-wait
    # limit, and nothing is left behind.
    ns = example("forward_and_wait")
    send, receive = anyio.create_memory_object_stream[Irp](8)
    io = airp.IoManager()
    disk = ns["Disk"](send)
    disk_device = io.create_device(disk, "\\Device\\Disk", flags=airp.DeviceFlags.BUFFERED_IO)
    airp.attach_device(io.create_device(ns["Encryptor"]()), disk_device)
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_controller, disk, receive)
        async with send, await io.open("\\Device\\Disk") as handle:
            with pytest.raises(TimeoutError):
                with anyio.fail_after(2):
                    await handle.write(b"attack at dawn")  # by hand: waits for the controller
            assert virtual_clock.now() == pytest.approx(3)
            assert bytes(disk.storage[:14]) == ns["scramble"](b"attack at dawn")  # written all the same
            with pytest.raises(TimeoutError):
                with anyio.fail_after(2):
                    await handle.read(14)  # forward_and_wait: cancelled at 5, back at 6
            assert virtual_clock.now() == pytest.approx(6)
            assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_forward_async_with_completion_routine_times_out_at_the_deadline(virtual_clock: VirtualClock) -> None:
    # The example's CachedDisk pends without a cancel routine (see the next test), so the
    # ByteCounter sits here over a cancel-safe disk that holds every request.
    counter = example("forward_async_with_completion_routine")["ByteCounter"]()
    io, held = filter_over_held(counter, airp.DeviceFlags.DIRECT_IO)
    async with await io.open("\\Device\\Held") as handle:
        await times_out_at(2, lambda: handle.read(9, offset=4), virtual_clock)
        request = await handle.read_overlapped(9, offset=4)
        assert request.status_returned == STATUS_PENDING  # propagated unchanged by the ByteCounter
        await times_out_at(1, lambda: request, virtual_clock)
        assert [irp.status for irp in held.seen] == [STATUS_CANCELLED, STATUS_CANCELLED]
        assert all(irp.pending_returned for irp in held.seen)  # the routine propagated the mark
        assert counter.bytes_read == 0
        assert io.outstanding_requests() == []


@pytest.mark.anyio
async def test_forward_async_with_completion_routine_example_disk(virtual_clock: VirtualClock) -> None:
    # The example's own CachedDisk: a miss ignores the cancel and is released when the slow
    # controller completes it; a cache hit then completes at once under the deadline.
    ns = example("forward_async_with_completion_routine")
    send, receive = anyio.create_memory_object_stream[Irp](8)
    io = airp.IoManager()
    disk = ns["CachedDisk"](send)
    disk_device = io.create_device(disk, "\\Device\\CachedDisk", flags=airp.DeviceFlags.DIRECT_IO)
    counter = ns["ByteCounter"]()
    airp.attach_device(io.create_device(counter), disk_device)
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_controller, disk, receive)
        async with send, await io.open("\\Device\\CachedDisk") as handle:
            with pytest.raises(TimeoutError):
                with anyio.fail_after(2):
                    await handle.read(9, offset=4)  # a miss: cancelled at 2, completed at 3
            assert virtual_clock.now() == pytest.approx(3)
            with anyio.fail_after(2):
                assert await handle.read(9, offset=4) == b"quick bro"  # now a hit
            assert virtual_clock.now() == pytest.approx(3)
            assert counter.bytes_read == 18
            assert io.outstanding_requests() == []
