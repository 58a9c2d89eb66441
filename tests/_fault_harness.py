"""The fault harness: a seeded random run of I/O and Plug and Play over a PnP stack.

Shared by ``tests/test_fault_harness.py`` (short runs on both backends) and
``benchmarks/bench_fault_harness.py`` (a long run, with figures).

**The system.**  A toaster bus (plugin ``toaster-bus``) is root-enumerated and started; toasters are
plugged into it and pulled out again.  Each toaster's stack, bottom first::

    the child PDO          toaster-bus          completes its PnP IRPs, answers IOCTL_BUS_GET_SERIAL
    a lower filter         pass-through-filter
    the function driver    toaster              remove lock, StartIo lane for READ/WRITE, GET_SIZE
    an upper filter        audit-filter         a completion routine on every read, write and IOCTL
    an upper filter        Prober (below)       answers IOCTL_PROBE with an IRP of its own

Every driver runs under one :class:`airp.Verifier` with forced pending (a fraction of the
``call_driver`` calls return STATUS_PENDING and finish on the next loop turn) and a low-resources
simulation (a fraction of the Prober's allocations fail), both seeded.

**The operations.**  A few worker tasks draw operations from one seeded generator until the run
has made its count: reads, writes, and device controls of four kinds (answered by the toaster, by
the bus PDO below it, by the Prober with its own IRP, and one nobody knows); opening and closing
handles; plugging a toaster in (enumerated at once half of the time, else by a later enumeration)
and pulling one out (``io.invalidate_device_relations``: a surprise removal, followed by
REMOVE_DEVICE at the last close); enumerating again; letting virtual time pass.  A request drawn
when no handle is open opens one instead, and an open drawn when no toaster is plugged in plugs
one in.  A request is sent with the ``*_overlapped`` calls and then awaited, a third of the time
under ``anyio.move_on_after`` with a random timeout, which cancels it.  One open in twenty is made
already cancelled (nothing is sent); the Prober's CREATE takes ``Config.open_latency`` of virtual
time, so opens under a timeout are cancelled in its dispatch routine.  Closing a handle cancels
what is still in flight on it, and a worker whose request finds the device gone closes its handle
half of the time, as an application would.  Nothing is serialised by the harness: enumerations,
plug-ins, opens and closes run whenever a worker draws them, also during a surprise removal.

The send itself is never under a timeout: that way the harness holds the :class:`airp.Overlapped`
of every request that was sent, and counts its completions with a done callback.  (None of these
dispatch routines waits for READ, WRITE or DEVICE_CONTROL, so a deadline passing during the send
would cancel nothing more than one passing while the request is awaited.)

**The checks** (:meth:`Report.problems`), made as the run goes and at its end:

- every request sent completed exactly once (its done callback ran once: ``lost`` and
  ``completed_twice`` are zero), with a status its story allows (:func:`allowed_statuses`);
- a request whose timeout ran out, or whose handle was closed, has completed when the requester's
  ``await`` (or the close) returns: the requester waits for the cancelled IRP;
- opens succeed on a started device and fail with the status its state gives otherwise;
- at each mark (by default 10%, 50% and 100% of the operations) the workers have ended, so nothing
  may be in flight: every StartIo lane is empty, every remove lock holds only its bias,
  ``io.outstanding_requests()`` and ``verifier.outstanding()`` are empty.  Then every handle is
  closed and every toaster pulled out, so the system is in the same state at each mark, and the
  traced memory is taken (after ``gc.collect()``) if :mod:`tracemalloc` is tracing;
- at the end, out of ``async with io`` (which removed the bus): ``io.outstanding_requests()`` and
  ``verifier.outstanding()`` are empty, the Prober's allocator has no IRP out, the drivers saw a
  CLOSE for every CREATE that succeeded, and ``verifier.check()`` passes (no violation, no error
  in a completion it deferred).

The harness's first version kept out of five paths airp or its example drivers got wrong, each
since fixed: two enumerations of one bus at once (they built
a child's stack twice), a failed or cancelled open (its file object was kept for good), an open
in progress during a surprise removal (REMOVE_DEVICE overtook its CREATE), closing the last handle
during a surprise removal (REMOVE_DEVICE overtook SURPRISE_REMOVAL), and a toaster pulled out
before any enumeration saw it (toaster-bus never deleted its PDO).  It runs all of them now.

Everything is drawn from ``random.Random(seed)`` and both clocks are virtual, so a run on asyncio
repeats exactly (checked for 20,000 operations, with and without tracemalloc).  trio
shuffles its run queue on purpose, so there a seed fixes the operations drawn, not the order in
which the tasks interleave.
"""

from __future__ import annotations

import contextlib
import gc
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from airp_drivers.bus import IOCTL_BUS_GET_SERIAL, ChildPdo, ToasterBus
from airp_drivers.filters import AuditFilter, PassThroughFilter
from airp_drivers.toaster import IOCTL_TOASTER_GET_SIZE, Toaster

import airp
import airp.testing
from airp import (
    STATUS_BUFFER_TOO_SMALL,
    STATUS_CANCELLED,
    STATUS_DELETE_PENDING,
    STATUS_DEVICE_NOT_READY,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NO_SUCH_DEVICE,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatus,
    NtStatusError,
    PnpMinor,
    PnpState,
    complete_request,
)

#: Answered by the :class:`Prober` with the toaster's size, asked for with an IRP of its own.
IOCTL_PROBE: Final = airp.ControlCode.make(0x8003, 0x803)
#: A control code no driver of the stack knows (the bus PDO fails it).
IOCTL_UNKNOWN: Final = airp.ControlCode.make(0x8004, 0x804)

#: Bytes each toaster stores; reads and writes stay inside it.
SIZE: Final = 256
CHUNK: Final = 16
#: Virtual seconds a toaster takes per read or write.
LATENCY: Final = 1.0

#: What the memory check allows to grow between two marks, besides the failure records below: a
#: bound that does not grow with the run.  Measured from 50% to 100% of 2,000-operation runs (seeds
#: 0 to 6 and 19, each in a fresh process), the failure records taken out: at most 7.9 KiB on
#: asyncio and 2.6 KiB on trio; of 200,000-operation runs (where the failure log is full at both
#: marks, so nothing of it grows; seed 0): +0.0 KiB on asyncio and +4.6 KiB on trio.  On asyncio most of
#: it is 55-byte blocks CPython allocates in the task step under airp's loop and keeps across
#: runs; they level off (about 460 blocks, 25 KiB, after 40,000 operations).  No device, frame or
#: exception is alive at rest beyond the bus's two devices.  Over the second half of a
#: 2,000-operation run (about 640 requests), 16 KiB is 25 bytes per request: anything kept per
#: request (the smallest Python object is 32 bytes, an IRP about 1 KiB) goes beyond it.
MEMORY_SLACK: Final = 16 * 1024
#: Bytes allowed per failure record kept: :class:`airp.LowResourcesSimulation` keeps a
#: :class:`airp.SimulatedFailure` for each of its last ``KEPT_FAILURES`` (1,000) failed allocations
#: (``failures``); about 190 bytes each with its counter and its call-site string, measured.  Once
#: the log is full it no longer grows, and neither does this part of the allowance.
FAILURE_RECORD: Final = 256


# -- the Prober: an upper filter that allocates IRPs (the low-resources simulation's target) --------


class ProberDevice:
    """The extension of a :class:`Prober` device: the device below and a remove lock.

    :ivar lower: the device below (what ``attach_device`` returned).
    :ivar lock: held from an IOCTL_PROBE's dispatch until its own IRP has come back, so that
        REMOVE_DEVICE waits for it.
    """

    def __init__(self, name: str) -> None:
        self.lower: DeviceObject | None = None
        self.lock = airp.RemoveLock(name, tracking=False)


class Prober(airp.Driver):
    """An upper filter that answers IOCTL_PROBE by asking the device below for its size.

    For each IOCTL_PROBE it allocates an IRP of its own (``allocate_irp`` through an
    :class:`airp.IrpAllocator` it owns, so the verifier's low-resources simulation applies),
    sends IOCTL_TOASTER_GET_SIZE down with it, and completes the request from that IRP's
    completion routine (reference 5.8: the routine frees the IRP and returns
    STATUS_MORE_PROCESSING_REQUIRED).  A failed allocation fails the request with
    STATUS_INSUFFICIENT_RESOURCES.  The request is tied to its own IRP with
    :func:`airp.cancel_with`.  Its CREATE waits :attr:`open_latency` of virtual time before it
    goes down (a requester that gives up meanwhile cancels the routine: airp completes the CREATE
    with STATUS_CANCELLED).  Everything else passes down untouched.

    :ivar open_latency: seconds a CREATE waits (0 until the run sets it: it does not wait).
    :ivar allocator: its IRPs' allocator (``owner=self``).
    :ivar open_files: file object -> CREATEs seen to succeed minus CLOSEs seen.
    :ivar probes: own IRPs sent.
    """

    pass_through = True

    def __init__(self) -> None:
        super().__init__("prober")
        self.allocator = airp.IrpAllocator(owner=self)
        self.open_files: dict[object, int] = {}
        self.probes = 0
        self.open_latency = 0.0

    def add_device(self, pdo: DeviceObject) -> DeviceObject[ProberDevice]:
        extension = ProberDevice(f"prober {len(self.devices)}")
        device = DeviceObject(self, extension=extension)
        extension.lower = airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        return device

    def unload(self) -> None:
        self.allocator.trim()

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject[ProberDevice], irp: Irp) -> int:
        lower = device.extension.lower
        assert lower is not None
        file_object = irp.current_stack_location.file_object
        if irp.current_stack_location.major == IrpMajor.CREATE:
            if self.open_latency:
                await anyio.sleep(self.open_latency)
            status, _ = await airp.forward_and_wait(lower, irp)
            if airp.nt_success(status):
                self.open_files[file_object] = self.open_files.get(file_object, 0) + 1
        else:
            status, _ = await airp.forward_and_wait(lower, irp)
            count = self.open_files.pop(file_object, 0) - 1
            if count:
                self.open_files[file_object] = count
        complete_request(irp, status, 0)
        return status

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: DeviceObject[ProberDevice], irp: Irp) -> int:
        params = irp.current_stack_location.parameters
        if params.io_control_code != IOCTL_PROBE:
            return await airp.pass_down(device, irp)
        extension = device.extension
        lower = extension.lower
        assert lower is not None
        status = extension.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return status
        if params.output_buffer_length < 8:
            extension.lock.release(irp)
            complete_request(irp, STATUS_BUFFER_TOO_SMALL, 0)
            return STATUS_BUFFER_TOO_SMALL
        own = airp.allocate_irp(lower.stack_size, allocator=self.allocator)
        if own is None:
            # IoAllocateIrp returned NULL: fail the request, do not pend it.
            extension.lock.release(irp)
            complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0)
            return STATUS_INSUFFICIENT_RESOURCES
        self.probes += 1
        own.system_buffer = bytearray(8)
        loc = own.next_stack_location
        loc.major = IrpMajor.DEVICE_CONTROL
        loc.parameters = airp.DeviceIoControlParameters(IOCTL_TOASTER_GET_SIZE, 0, 8)
        own.set_completion_routine(self._probed, (extension.lock, irp))
        # Marked before the send: the own IRP may complete, and complete this request, before
        # send_irp returns.
        irp.mark_pending()
        airp.cancel_with(irp, own)
        await airp.send_irp(lower, own)
        return STATUS_PENDING

    @staticmethod
    def _probed(device: DeviceObject | None, own: Irp, context: tuple[airp.RemoveLock, Irp]) -> int:
        lock, original = context
        count = 0
        if airp.nt_success(own.status):
            assert own.system_buffer is not None
            assert original.system_buffer is not None
            count = own.information
            original.system_buffer[:count] = own.system_buffer[:count]
        complete_request(original, own.status, count)
        airp.free_irp(own)
        lock.release(original)
        return STATUS_MORE_PROCESSING_REQUIRED

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject[ProberDevice], irp: Irp) -> int:
        if irp.current_stack_location.minor != PnpMinor.REMOVE_DEVICE:
            return await airp.pass_down(device, irp)
        extension = device.extension
        lower = extension.lower
        assert lower is not None
        status = extension.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return status
        irp.status = NtStatus(STATUS_SUCCESS)
        status = await airp.pass_down(device, irp)
        # Probes still below hold the lock until their own IRP comes back.
        await extension.lock.release_and_wait(irp)
        airp.detach_device(lower)
        airp.delete_device(device)
        return status


# -- what a request may end with ---------------------------------------------------------------------

#: The kinds of request, and what each ends with on a started device when nothing goes wrong.
KINDS: Final[dict[str, frozenset[int]]] = {
    "read": frozenset({STATUS_SUCCESS}),
    "write": frozenset({STATUS_SUCCESS}),
    "size": frozenset({STATUS_SUCCESS}),  # IOCTL_TOASTER_GET_SIZE: the toaster answers at once
    "serial": frozenset({STATUS_SUCCESS}),  # IOCTL_BUS_GET_SERIAL: passed down to the bus PDO
    "probe": frozenset({STATUS_SUCCESS, STATUS_INSUFFICIENT_RESOURCES}),  # the Prober's own IRP
    "unknown": frozenset({STATUS_INVALID_DEVICE_REQUEST}),  # the bus PDO fails it
}


def allowed_statuses(kind: str, sent_in: PnpState, done_in: PnpState, cancelled: bool) -> frozenset[int]:
    """The statuses a request of *kind* may complete with.

    :param kind: one of :data:`KINDS`.
    :param sent_in: the state of the device node when the request was sent.
    :param done_in: its state when the request completed.
    :param cancelled: whether the requester had cancelled it (its timeout had run out, its handle's
        close had begun) when it completed.
    :returns: the allowed statuses.
    """
    allowed = set(KINDS[kind]) if sent_in is PnpState.STARTED else set()
    if kind == "probe":
        # The Prober allocates before anything below can say the device is gone.
        allowed.add(STATUS_INSUFFICIENT_RESOURCES)
    if sent_in is not PnpState.STARTED or done_in is not PnpState.STARTED:
        # Surprise-removed before or while it was in flight: the lane was stopped, or the toaster
        # refuses I/O once the device is gone.
        allowed.add(STATUS_NO_SUCH_DEVICE)
    if cancelled:
        allowed.add(STATUS_CANCELLED)
    return frozenset(allowed)


#: What a refused open may say, by the node's state.
OPEN_REFUSALS: Final[dict[PnpState, frozenset[int]]] = {
    PnpState.NOT_STARTED: frozenset({STATUS_DEVICE_NOT_READY}),  # its stack is being built or started
    PnpState.REMOVE_PENDING: frozenset({STATUS_DELETE_PENDING}),
    PnpState.SURPRISE_REMOVED: frozenset({STATUS_NO_SUCH_DEVICE}),
    PnpState.REMOVED: frozenset({STATUS_OBJECT_NAME_NOT_FOUND, STATUS_NO_SUCH_DEVICE}),
}


# -- the run ------------------------------------------------------------------------------------------

#: The operations and their weights.
OPERATIONS: Final[dict[str, int]] = {
    "read": 12,
    "write": 12,
    "size": 4,
    "serial": 4,
    "probe": 8,
    "unknown": 2,
    "open": 6,
    "close": 3,
    "plug": 1,
    "unplug": 1,
    "enumerate": 1,
    "sleep": 2,
}


@dataclass(frozen=True)
class Config:
    """What a run does.

    :param operations: how many operations the workers make between them.
    :param seed: seeds everything: the operations, the forced pendings, the failed allocations.
    :param workers: concurrent worker tasks.
    :param force_pending: the verifier's probability of forcing a ``call_driver`` pending.
    :param low_resources: the probability that one of the Prober's allocations fails.
    :param timeout: the probability that a request (or an open) is awaited under a random timeout.
    :param max_toasters: how many toasters may be plugged in at once.
    :param marks: the fractions of *operations* at which the system is brought to rest, checked,
        and its memory taken (the last should be 1.0).
    :param prober: the Prober driver class (a test gives a faulty one to see the harness catch it).
    :param open_latency: virtual seconds the Prober's CREATE waits before it goes down, so that
        an open's timeout can cancel it in the dispatch routine and a surprise removal can come
        while an open is in progress (``0``: the CREATE does not wait).
    """

    operations: int = 2000
    seed: int = 0
    workers: int = 4
    force_pending: float = 0.3
    low_resources: float = 0.1
    timeout: float = 0.35
    max_toasters: int = 3
    marks: tuple[float, ...] = (0.1, 0.5, 1.0)
    prober: type[Prober] = Prober
    open_latency: float = 0.05


@dataclass
class Mark:
    """The system at rest after a fraction of the operations."""

    fraction: float
    operations: int
    #: Traced memory after ``gc.collect()`` (``None`` if tracemalloc is not tracing).
    memory: int | None
    #: Failed allocations so far.
    allocation_failures: int
    #: The failure records the simulation keeps (its last ``KEPT_FAILURES``: see :data:`FAILURE_RECORD`).
    failure_records: int
    #: Seconds of real time since the run began.
    elapsed: float


@dataclass
class Report:
    """What a run did and found.  :meth:`problems` lists what is wrong; an empty list is a pass."""

    config: Config
    backend: str = ""
    operations: int = 0
    #: Requests sent (an Overlapped came back).
    sent: int = 0
    #: Requests whose done callback ran (counted once each).
    completed: int = 0
    #: Done callbacks that ran for a request already completed.
    completed_twice: int = 0
    #: Final statuses of the requests, by name.
    statuses: Counter[str] = field(default_factory=Counter)
    #: What the other operations came to: opens, closes, timeouts, plugging...
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Failed checks, as text.
    errors: list[str] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    #: What was left at the end, out of ``async with io`` (all should be zero).
    outstanding_requests: int = 0
    verifier_outstanding: int = 0
    allocator_outstanding: int = 0
    files_left_open: int = 0
    verifier_statistics: airp.VerifierStatistics | None = None
    #: Allocations the low-resources simulation failed (its ``failure_count``).
    allocation_failures: int = 0
    #: Seconds of real time, and virtual time at the end.
    elapsed: float = 0.0
    virtual_time: float = 0.0

    @property
    def lost(self) -> int:
        """Requests sent whose done callback never ran."""
        return self.sent - self.completed

    def problems(self) -> list[str]:
        """Everything the run found wrong, as text (empty for a clean run; memory not included)."""
        found = list(self.errors)
        for name in ("lost", "completed_twice", "outstanding_requests", "verifier_outstanding", "allocator_outstanding", "files_left_open"):
            value = getattr(self, name)
            if value:
                found.append(f"{name} = {value}")
        return found

    def _mark(self, fraction: float) -> Mark | None:
        return next((mark for mark in self.marks if mark.fraction == fraction), None)

    def memory_growth(self, first: float = 0.5, last: float = 1.0) -> int | None:
        """Traced memory at mark *last* minus memory at mark *first*, or ``None`` if not traced."""
        a, b = self._mark(first), self._mark(last)
        if a is None or b is None or a.memory is None or b.memory is None:
            return None
        return b.memory - a.memory

    def memory_allowance(self, first: float = 0.5, last: float = 1.0) -> int:
        """What may grow between the marks: :data:`MEMORY_SLACK` plus the failure records kept meanwhile.

        Records the simulation dropped (past its ``KEPT_FAILURES``) are not allowed for: over a
        long run the allowance is :data:`MEMORY_SLACK` alone.
        """
        a, b = self._mark(first), self._mark(last)
        records = 0 if a is None or b is None else b.failure_records - a.failure_records
        return MEMORY_SLACK + FAILURE_RECORD * records

    def lines(self) -> list[str]:
        """A printable summary."""
        out = [
            f"{self.backend}: {self.operations:,} operations, seed {self.config.seed}, {self.config.workers} workers:"
            f" {self.elapsed:.2f} s, {self.operations / max(self.elapsed, 1e-9):,.0f} operations/s"
            f" ({self.virtual_time:,.1f} s of virtual time)",
            f"  requests sent {self.sent:,}, completed {self.completed:,}: lost={self.lost},"
            f" completed-twice={self.completed_twice}",
            "  statuses: " + ", ".join(f"{name} {count:,}" for name, count in self.statuses.most_common()),
            "  other operations: " + ", ".join(f"{name} {count:,}" for name, count in sorted(self.outcomes.items())),
        ]
        stats = self.verifier_statistics
        if stats is not None:
            out.append(
                f"  verifier: {stats.irps_watched:,} IRPs watched, {stats.forced_pendings:,} calls forced pending,"
                f" {self.allocation_failures:,} of {stats.allocation_attempts:,} allocations failed,"
                f" {sum(stats.violations.values())} violations"
            )
        out.append(
            f"  at the end: outstanding requests {self.outstanding_requests}, verifier outstanding"
            f" {self.verifier_outstanding}, own IRPs not freed {self.allocator_outstanding},"
            f" files left open {self.files_left_open}"
        )
        for mark in self.marks:
            memory = "not traced" if mark.memory is None else f"{mark.memory / 1024:,.1f} KiB"
            out.append(
                f"  memory at {mark.fraction:.0%} ({mark.operations:,} operations, {mark.elapsed:.1f} s):"
                f" {memory} ({mark.allocation_failures:,} allocations failed, {mark.failure_records:,} records kept)"
            )
        growth = self.memory_growth()
        if growth is not None:
            out.append(
                f"  memory growth 50% -> 100%: {growth / 1024:+,.1f} KiB"
                f" (allowed {self.memory_allowance() / 1024:,.1f} KiB)"
            )
        for problem in self.problems():
            out.append(f"  PROBLEM: {problem}")
        return out


@dataclass
class _Sent:
    """A request in flight, and what its story allows."""

    kind: str
    node: airp.DeviceNode
    handle: airp.FileHandle
    sent_in: PnpState
    request: airp.Overlapped[Any] | None = None
    #: The virtual time at which the requester's timeout runs out (``None``: no timeout).
    deadline: float | None = None
    #: Set when its handle's close begins.
    closing: bool = False
    #: Whether the worker closes the handle if the request finds the device gone.
    close_if_gone: bool = False
    completions: int = 0

    def cancel_requested(self) -> bool:
        """Whether the requester has cancelled the request by now (its timeout, its handle's close)."""
        return self.closing or (self.deadline is not None and anyio.current_time() >= self.deadline)


class _Run:
    """One run's state: the drivers, the bus, the open handles, the requests in flight."""

    def __init__(self, config: Config, io: airp.IoManager, verifier: airp.Verifier, report: Report) -> None:
        self.config = config
        self.io = io
        self.verifier = verifier
        self.report = report
        self.rng = random.Random(config.seed)
        self.bus: ToasterBus = io.load_driver(ToasterBus)  # type: ignore[assignment]
        self.toaster: Toaster = io.load_driver(Toaster, size=SIZE, latency=LATENCY)  # type: ignore[assignment]
        self.prober: Prober = io.load_driver(config.prober)  # type: ignore[assignment]
        self.prober.open_latency = config.open_latency
        io.register_stack(
            "toaster",
            function=self.toaster,
            lower_filters=[io.load_driver(PassThroughFilter)],
            upper_filters=[io.load_driver(AuditFilter), self.prober],
        )
        self.bus_node: airp.DeviceNode | None = None
        self.serials = 0
        self.handles: list[tuple[airp.FileHandle, airp.DeviceNode]] = []
        self.in_flight: dict[int, _Sent] = {}
        self.done_ops = 0
        # Enumerations in progress (to count the paths taken: one during another, a close during one).
        self.enumerating = 0
        self.names = list(OPERATIONS)
        self.weights = list(OPERATIONS.values())

    def error(self, text: str) -> None:
        self.report.errors.append(text)

    # -- the bus ----------------------------------------------------------------------------------

    def toaster_nodes(self) -> list[airp.DeviceNode]:
        assert self.bus_node is not None
        return [node for node in self.bus_node.children if not node.removed]

    def present(self) -> list[str]:
        return [pdo.extension.serial for pdo in self.bus.children()]

    async def enumerate(self) -> None:
        """``io.invalidate_device_relations`` on the bus, from any worker at any time.

        Two at once are queued by the PnP manager (one enumeration of a node at a time), which
        used to build a child's stack twice.
        """
        assert self.bus_node is not None
        if self.enumerating:
            self.report.outcomes["enumerated during another"] += 1
        self.enumerating += 1
        try:
            await self.io.invalidate_device_relations(self.bus_node)
        finally:
            self.enumerating -= 1

    async def plug(self, *, enumerate_now: bool | None = None) -> None:
        """Plug a toaster in; enumerate the bus at once if *enumerate_now* (``None``: half of the time).

        A toaster left to a later enumeration may be pulled out before any enumeration saw it
        (toaster-bus then deletes its PDO at once: it used to keep it).
        """
        if len(self.present()) >= self.config.max_toasters:
            self.report.outcomes["plug: bus full"] += 1
            return
        if enumerate_now is None:
            enumerate_now = self.rng.random() < 0.5
        self.serials += 1
        serial = f"S-{self.serials}"
        self.bus.plug_in(serial)
        self.report.outcomes["plugged in"] += 1
        if enumerate_now:
            await self.enumerate()

    async def unplug(self, serial: str) -> None:
        pdo = self.bus.unplug(serial)
        if not pdo.extension.reported:
            self.report.outcomes["pulled out before any enumeration"] += 1
        await self.enumerate()
        self.report.outcomes["pulled out"] += 1

    # -- requests ---------------------------------------------------------------------------------

    def _done(self, sent: _Sent) -> Callable[[airp.Overlapped[Any]], None]:
        def done(request: airp.Overlapped[Any]) -> None:
            sent.completions += 1
            if sent.completions > 1:
                self.report.completed_twice += 1
                self.error(f"{request!r} ({sent.kind}) completed {sent.completions} times")
                return
            self.report.completed += 1
            self.in_flight.pop(id(sent), None)
            status = NtStatus(request.irp.status)
            self.report.statuses[status.name] += 1
            # The callback runs inside the completion walk, before the requester's await ends:
            # whether the requester had cancelled it is read from its deadline and its handle.
            cancelled = sent.cancel_requested()
            allowed = allowed_statuses(sent.kind, sent.sent_in, sent.node.state, cancelled)
            if status not in allowed:
                names = ", ".join(sorted(NtStatus(s).name for s in allowed)) or "none"
                self.error(
                    f"{sent.kind} sent to {sent.node.name} in {sent.sent_in.name}, done in"
                    f" {sent.node.state.name}, cancelled={cancelled}: {status.name} (allowed: {names})"
                )

        return done

    async def request(self, kind: str) -> None:
        if not self.handles:
            # Nothing to send it on: the application opens the device first.
            await self.open()
            return
        rng = self.rng
        handle, node = rng.choice(self.handles)
        sent = _Sent(kind, node, handle, node.state, close_if_gone=rng.random() < 0.5)
        timeout = rng.uniform(0.0, 2 * LATENCY) if rng.random() < self.config.timeout else None
        offset = rng.randrange(0, SIZE - CHUNK + 1)
        try:
            if kind == "read":
                request: airp.Overlapped[Any] = await handle.read_overlapped(CHUNK, offset=offset)
            elif kind == "write":
                request = await handle.write_overlapped(b"w" * CHUNK, offset=offset)
            else:
                code = {"size": IOCTL_TOASTER_GET_SIZE, "serial": IOCTL_BUS_GET_SERIAL, "probe": IOCTL_PROBE}
                request = await handle.device_control_overlapped(code.get(kind, IOCTL_UNKNOWN), output_length=16)
        except ValueError:
            # Another worker is closing the handle: no request was built.
            self.report.outcomes["request: handle closing"] += 1
            return
        except NtStatusError as refused:
            # The device was deleted under the handle (delete-pending): only a close is left.
            self.report.outcomes[f"request refused: {refused.status.name}"] += 1
            if node.state is PnpState.STARTED:
                self.error(f"{kind} refused with {refused.status.name} on a started device")
            return
        sent.request = request
        self.report.sent += 1
        self.in_flight[id(sent)] = sent
        request.add_done_callback(self._done(sent))
        if timeout is None:
            await self._await(request)
        else:
            with anyio.move_on_after(timeout) as scope:
                sent.deadline = scope.deadline
                await self._await(request)
            if scope.cancelled_caught:
                self.report.outcomes["request: timed out"] += 1
                if not request.done:
                    self.error(f"{request!r}: the requester's timeout ended its wait before the request completed")
        if request.irp.status == STATUS_NO_SUCH_DEVICE and sent.close_if_gone:
            # The device is gone: the application closes its handle.
            for index, (other, _node) in enumerate(self.handles):
                if other is handle:
                    await self.close(index)
                    break

    @staticmethod
    async def _await(request: airp.Overlapped[Any]) -> None:
        # A failed request raises NtStatusError: its status was checked by the done callback.
        with contextlib.suppress(NtStatusError):
            await request

    # -- handles ----------------------------------------------------------------------------------

    async def open(self) -> None:
        nodes = self.toaster_nodes()
        if not nodes:
            # Nothing to open: the user plugs a toaster in first.
            await self.plug()
            return
        rng = self.rng
        started = [node for node in nodes if node.state is PnpState.STARTED]
        # Mostly a device that is there; now and then one that is going or gone.
        node = rng.choice(started if started and rng.random() < 0.9 else nodes)
        name = node.name
        assert name is not None
        timeout = None
        draw = rng.random()
        if draw < 0.05:
            timeout = 0.0  # the opener is cancelled already: nothing is sent
        elif self.prober.open_latency and draw < 0.05 + self.config.timeout:
            # Half of these run out while the Prober's CREATE waits: cancelled in its routine.
            timeout = rng.uniform(0.0, 2 * self.prober.open_latency)
        await self._open(node, name, give_up_after=timeout)

    async def _open(self, node: airp.DeviceNode, name: str, *, give_up_after: float | None) -> None:
        before = node.state
        handle: airp.FileHandle | None = None
        try:
            with anyio.move_on_after(give_up_after if give_up_after is not None else float("inf")) as scope:
                handle = await self.io.open(name)
        except NtStatusError as refused:
            if node.state is not before:
                self.report.outcomes[f"open: {before.name} -> {node.state.name} meanwhile"] += 1
            self.report.outcomes[f"open refused: {refused.status.name}"] += 1
            allowed = OPEN_REFUSALS.get(before, frozenset()) | OPEN_REFUSALS.get(node.state, frozenset())
            if refused.status not in allowed:
                self.error(f"open of {name} in {before.name} (now {node.state.name}) refused with {refused.status.name}")
            return
        if node.state is not before:
            self.report.outcomes[f"open: {before.name} -> {node.state.name} meanwhile"] += 1
        if scope.cancelled_caught:
            self.report.outcomes["open: timed out"] += 1
            return
        assert handle is not None
        self.report.outcomes["opened"] += 1
        if before is not PnpState.STARTED:
            self.error(f"open of {name} in {before.name} succeeded")
        self.handles.append((handle, node))

    async def close(self, index: int | None = None) -> None:
        if not self.handles:
            self.report.outcomes["close: no handle"] += 1
            return
        if index is None:
            index = self.rng.randrange(len(self.handles))
        handle, node = self.handles.pop(index)
        for sent in self.in_flight.values():
            if sent.handle is handle:
                sent.closing = True  # the close cancels what is still in flight on it
        if node.state is PnpState.SURPRISE_REMOVED and not node.removed and self.enumerating:
            self.report.outcomes["closed during a surprise removal"] += 1
        await handle.close()
        self.report.outcomes["closed"] += 1
        for sent in self.in_flight.values():
            if sent.handle is handle:
                self.error(f"{sent.request!r} still in flight after its handle's close returned")

    # -- the workers ------------------------------------------------------------------------------

    async def operate(self, name: str) -> None:
        if name in KINDS:
            await self.request(name)
        elif name == "open":
            await self.open()
        elif name == "close":
            await self.close()
        elif name == "plug":
            await self.plug()
        elif name == "unplug":
            present = self.present()
            if present:
                await self.unplug(self.rng.choice(present))
            else:
                self.report.outcomes["unplug: bus empty"] += 1
        elif name == "enumerate":
            await self.enumerate()
            self.report.outcomes["enumerated"] += 1
        else:
            await anyio.sleep(self.rng.uniform(0.0, LATENCY))

    async def worker(self, until: int) -> None:
        while self.done_ops < until:
            self.done_ops += 1
            await self.operate(self.rng.choices(self.names, self.weights)[0])

    async def segment(self, until: int) -> None:
        """Plug two toasters in and run the workers until *until* operations have been made."""
        for _ in range(2):
            await self.plug(enumerate_now=True)
        async with anyio.create_task_group() as tg:
            for _ in range(self.config.workers):
                tg.start_soon(self.worker, until)

    # -- at rest: the same state at every mark ----------------------------------------------------

    def check_at_rest(self, where: str) -> None:
        """Every requester has returned: nothing may be in flight anywhere."""
        if self.in_flight:
            self.error(f"{where}: {len(self.in_flight)} requests still in flight after their requesters returned")
        for device in self.toaster.devices:
            lane = device.extension.lane
            if lane is not None and (lane.current_irp is not None or len(lane.queue)):
                self.error(f"{where}: the StartIo lane of {device!r} holds {lane.current_irp!r} and {len(lane.queue)} queued")
        for device in [*self.toaster.devices, *self.prober.devices]:
            stats = device.extension.lock.statistics()
            if not stats.removed and stats.count != 1:
                self.error(f"{where}: the remove lock of {device!r} is held {stats.count - 1} times at rest")
        outstanding = self.io.outstanding_requests()
        if outstanding:
            self.error(f"{where}: io.outstanding_requests() = {outstanding!r}")
        held = self.verifier.outstanding()
        if held:
            self.error(f"{where}: verifier.outstanding() = {[str(o) for o in held]}")

    async def rest(self) -> None:
        """Close every handle and pull out every toaster: the state every mark is taken in."""
        while self.handles:
            await self.close(0)
        for serial in self.present():
            await self.unplug(serial)
        await airp.testing.wait_until_quiet()
        left = self.toaster_nodes()
        if left:
            self.error(f"at rest, toaster nodes not removed: {left!r}")
        pdos = [device for device in self.bus.devices if isinstance(device.extension, ChildPdo)]
        if pdos:
            self.error(f"at rest, toaster-bus still has child PDOs: {pdos!r}")
        # (The idle IRPs of the Prober's lookaside list are left as they are: freed to the list,
        # an IRP keeps no device alive, so they weigh the same at every mark.)


async def run(config: Config, backend: str = "") -> Report:
    """Run the harness once, inside ``anyio.run`` on a virtual clock (``airp.testing``).

    Memory is taken at each mark only if :mod:`tracemalloc` is tracing (the caller starts it).

    :param config: what to do.
    :param backend: its name, for the report.
    :returns: the :class:`Report`; :meth:`Report.problems` is empty for a clean run.
    :raises BaseException: whatever a driver or airp raises (a bug check ends the run).
    """
    report = Report(config, backend)
    simulation = airp.LowResourcesSimulation(config.low_resources, seed=config.seed)
    verifier = airp.Verifier(force_pending=config.force_pending, low_resources=simulation, seed=config.seed)
    started = time.perf_counter()
    async with airp.IoManager(verifier=verifier) as io:
        harness = _Run(config, io, verifier, report)
        harness.bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=harness.bus)
        await io.start_device(harness.bus_node)
        for fraction in config.marks:
            await harness.segment(round(config.operations * fraction))
            harness.check_at_rest(f"at {fraction:.0%}")
            await harness.rest()
            memory = None
            if tracemalloc.is_tracing():
                gc.collect()
                memory = tracemalloc.get_traced_memory()[0]
            report.marks.append(
                Mark(
                    fraction,
                    harness.done_ops,
                    memory,
                    simulation.failure_count,
                    len(simulation.failures),
                    time.perf_counter() - started,
                )
            )
    report.operations = harness.done_ops
    report.elapsed = time.perf_counter() - started
    report.virtual_time = anyio.current_time()
    report.outstanding_requests = len(io.outstanding_requests())
    report.verifier_outstanding = len(verifier.outstanding())
    report.allocator_outstanding = harness.prober.allocator.statistics().outstanding
    report.files_left_open = sum(harness.prober.open_files.values())
    report.allocation_failures = simulation.failure_count
    report.verifier_statistics = verifier.statistics()
    try:
        verifier.check()
    except airp.VerificationFailed as failed:
        report.errors.append(f"verifier.check(): {failed}")
    return report
