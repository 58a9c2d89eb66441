"""The opt-in Driver Verifier (reference 10.3, 10.4): the checks that cost something, forced pending,
low resources and IRP tracking.

A :class:`Verifier` is a watcher of the ``MonitorHooks`` protocol: give it to
``IoManager(verifier=...)`` and it receives every call the machine and the shell make about the
IRPs that manager builds (and the IRPs drivers allocate while they work on them).  With no
verifier, nothing here runs: the hot path pays the one ``irp._monitor is None`` test it already
pays for tracing.

How a rule is tied to a driver.  Windows finds the driver that broke a rule from the caller's
address; airp finds it from the IRP's stack locations, as follows, and applies a check only when
that driver is verified (``drivers=None`` verifies every driver, as ``verifier.exe /all``; a list
verifies those, as ``verifier.exe /driver x.sys``):

- the *sender* of a ``call_driver``: the device at the location above the one the IRP is sent
  to; after a skip, the device that was dispatched at that very location; for the first send of
  an IRP, its *creator* (the driver working on the request the IRP was allocated for, or the
  device whose dispatch routine is running in this task); ``None`` for the I/O manager;
- the *completer*: the device at the IRP's current location when ``complete_request`` begins;
- the *actor*: the device whose dispatch routine is running in the current task (a context
  variable set around each dispatch of a watched IRP), for the rules about a driver that acts on
  an IRP it no longer holds (0x205, 0x209, 0x307, 0x239).

Forced pending (10.4).  For a ``call_driver`` made by a verified driver, with probability
*force_pending* (drawn from ``random.Random(seed)``), the verifier arms a deferral at the location
whose completion routine belongs to the sender (the location the IRP is sent to).  If the lower
driver completes the IRP before its dispatch routine returns, the walk stops at that location,
exactly before the completion would unwind into the sender (Windows 7 and later), and
``call_driver`` returns STATUS_PENDING.  The rest of the walk runs later, from the event loop (a
callback on asyncio, a system task on trio), with the location marked pending, so the sender's
completion routine sees ``irp.pending_returned`` and must propagate it.  While the completion is
deferred the IRP reads STATUS_PENDING with information 0: in Windows those fields mean nothing to
the caller until its completion routine runs, and airp makes them visibly not ready so that a
driver which reads them right after ``call_driver`` breaks every time rather than by luck.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._machine._allocation import IrpAllocator, LowResourcesSimulation
from .._machine._arguments import check_plain_function
from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._codes import IrpMajor, PnpMinor, PowerMinor
from .._machine._completion import complete_request
from .._machine._device import DeviceObject, get_attached_device
from .._machine._driver import Driver
from .._machine._irp import _UNUSED, Irp
from .._machine._misuse import must_be
from .._machine._monitor import (
    HookChain,
    MonitorHookError,
    MonitorHooks,
    current_request,
    report_hook_error,
    set_aside,
)
from .._machine._pnp import PnpState
from .._machine._status import (
    STATUS_INTERNAL_ERROR,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NOT_SUPPORTED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    NtStatus,
)
from .._shell._call import call_driver

if TYPE_CHECKING:
    from .._machine._irp import CompletionRoutine

__all__ = [
    "OutstandingIrp",
    "VerificationFailed",
    "Verifier",
    "VerifierStatistics",
    "VerifierViolation",
]

_SMPR = int(STATUS_MORE_PROCESSING_REQUIRED)
_PENDING = int(STATUS_PENDING)
_NOT_SUPPORTED = int(STATUS_NOT_SUPPORTED)
_INTERNAL_ERROR = int(STATUS_INTERNAL_ERROR)
_PENDING_RETURNED = 0x01
_INVOKE_BITS = 0xE0

#: The minor of the PnP IRP the verifier sends every newly started stack: undocumented, so no
#: driver understands it (Windows' verifier sends the same kind of "bogus" minor).
_FAKE_PNP_MINOR = 0xFF

#: The majors whose IRPs start as STATUS_NOT_SUPPORTED and go down untouched when not handled.
_STATUS_RULE_MAJORS = {
    int(IrpMajor.PNP): VerifierCode.PNP_IRP_NOT_INITIALIZED,
    int(IrpMajor.POWER): VerifierCode.POWER_IRP_NOT_INITIALIZED,
    int(IrpMajor.SYSTEM_CONTROL): VerifierCode.WMI_IRP_NOT_INITIALIZED,
}
#: The minor functions documented for each of those majors (IRP_MN_*; WMI's are 0x00 to 0x0B).
_KNOWN_MINORS: dict[int, frozenset[int]] = {
    int(IrpMajor.PNP): frozenset(int(m) for m in PnpMinor),
    int(IrpMajor.POWER): frozenset(int(m) for m in PowerMinor),
    int(IrpMajor.SYSTEM_CONTROL): frozenset(range(0x0C)),
}

_RULES: dict[int, str] = {
    VerifierCode.FORWARD_QUEUED_IRP: "forwarded an IRP that is still queued below it",
    VerifierCode.COMPLETE_QUEUED_IRP: "completed an IRP that is still queued below it",
    VerifierCode.PNP_IRP_NOT_INITIALIZED: "sent a PnP IRP whose status was not initialised to STATUS_NOT_SUPPORTED",
    VerifierCode.POWER_IRP_NOT_INITIALIZED: "sent a power IRP whose status was not initialised to STATUS_NOT_SUPPORTED",
    VerifierCode.WMI_IRP_NOT_INITIALIZED: "sent a WMI IRP whose status was not initialised to STATUS_NOT_SUPPORTED",
    VerifierCode.STATUS_CHANGED_NOT_UNDERSTOOD: "changed the status of an IRP it does not understand, then passed it down",
    VerifierCode.INFORMATION_CHANGED_NOT_UNDERSTOOD: "changed the information of an IRP it does not understand, then passed it down",
    VerifierCode.COMPLETED_NOT_UNDERSTOOD: "completed an IRP it does not understand with a changed status instead of passing it down",
    VerifierCode.FAILED_PNP_PASSED_DOWN: "failed a PnP IRP and passed it down instead of completing it",
    VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED: "overwrote the status an upper driver set with STATUS_NOT_SUPPORTED",
    VerifierCode.FAILED_POWER_PASSED_DOWN: "failed a power IRP and passed it down instead of completing it",
    VerifierCode.COPIED_WITHOUT_ROUTINE: "copied its stack location to the next one but set no completion routine (skip instead)",
    VerifierCode.DISPATCH_STATUS_MISMATCH: "returned a status from its dispatch routine other than the IRP's status",
    VerifierCode.PENDING_NOT_PROPAGATED: "a completion routine did not propagate the pending mark",
    VerifierCode.COMPLETE_NEVER_SENT: "completed an IRP that was never sent with call_driver",
    VerifierCode.WAIT_ON_SIGNALLED_EVENT: "went on after STATUS_PENDING as though the IRP were already back (premature unwind)",
}


@dataclass(frozen=True)
class VerifierViolation:
    """One rule a verified driver broke.

    :ivar code: the Driver Verifier code (parameter 1 of bug check 0xC9), or, for a violation
        reported with another bug check, that bug check's code (0xD5 for a write to a completed
        IRP: :data:`~airp.Verifier.WRITE_AFTER_COMPLETION`).
    :ivar rule: the rule, in a sentence.
    :ivar irp: the IRP.
    :ivar device: the device whose driver broke the rule (``None`` if not known).
    :ivar driver: that driver.
    :ivar parameters: the four bug check parameters (``(code, irp, ..., ...)`` for 0xC9).
    :ivar message: the bug check's message, naming all of the above.
    :ivar bug_check: the bug check code raised for it: 0xC9 (the default), or 0xD5.
    """

    code: VerifierCode | int
    rule: str
    irp: Irp
    device: DeviceObject | None
    driver: Driver | None
    parameters: tuple[Any, Any, Any, Any]
    message: str
    bug_check: int = BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION


@dataclass(frozen=True)
class OutstandingIrp:
    """A watched IRP that has not completed, from :meth:`Verifier.outstanding`.

    :ivar irp: the IRP.
    :ivar device: the device holding it (at its current location).
    :ivar driver: that device's driver.
    :ivar location: its current location (1-based, as ``irp.current_location``).
    :ivar major: the major function at that location.
    :ivar held_for: seconds since that device received it (the verifier's clock).
    :ivar deferred: True if the verifier itself holds its completion (forced pending, not yet run).
    """

    irp: Irp
    device: DeviceObject | None
    driver: Driver | None
    location: int
    major: int
    held_for: float
    deferred: bool

    def __str__(self) -> str:
        try:
            major = IrpMajor(self.major).name
        except ValueError:
            major = hex(self.major)
        how = " (its completion deferred by the verifier)" if self.deferred else ""
        return (
            f"{self.irp!r} ({major}) held by {self.device!r} of {self.driver!r} at location {self.location}"
            f" for {self.held_for:.6g} s{how}"
        )


@dataclass(frozen=True)
class VerifierStatistics:
    """A snapshot of what a :class:`Verifier` has done (trio-style ``statistics()``).

    :ivar irps_watched: IRPs it has been given to watch (a reused IRP counts again).
    :ivar checks_run: per code, how many times the check was evaluated.
    :ivar violations: per code, how many violations it found.
    :ivar forced_pendings: ``call_driver`` calls that returned STATUS_PENDING because of it.
    :ivar deferrals_armed: calls it chose to force (those whose IRP was still pending below when
        the dispatch routine returned needed no forcing).
    :ivar outstanding: watched IRPs not completed now.
    :ivar allocation_attempts: allocations its low-resources simulation has seen.
    :ivar allocation_failures: allocations it failed.
    :ivar irps_tracked: IRPs it holds a record of now: those in flight (sent and not yet completed
        or handed back, or watched and not yet sent).  It goes back down as IRPs complete, also
        those whose dispatch routine raised or was cancelled, so that it stays flat over a long
        run; an IRP that never completes stays, and :meth:`Verifier.check` reports it.
    :ivar fake_irps_sent: PnP IRPs of a minor no driver understands that it sent to newly started
        stacks (``fake_pnp_irps``).
    """

    irps_watched: int
    checks_run: Mapping[int, int]
    violations: Mapping[int, int]
    forced_pendings: int
    deferrals_armed: int
    outstanding: int
    allocation_attempts: int
    allocation_failures: int
    irps_tracked: int = 0
    fake_irps_sent: int = 0


#: Bug check 0xD5: under I/O verification IRPs come from special pool, and a completed request is
#: freed, so a driver's write to a completed IRP is a write to freed special pool.
_WRITE_AFTER_COMPLETION = BugCheckCode.DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL
_TOUCH_RULE = "wrote to an IRP after it completed"


class _CompletedIrp(Irp):
    """An IRP the verifier watched to its completion: writing ``status`` or ``information`` now is
    a driver writing to an IRP that the I/O manager has handed back and, in Windows, freed.

    The verifier swaps a completed IRP's class to this one (no field is added: the layout is the
    IRP's), so that an IRP no verifier watches keeps the plain slots, with nothing on their path.
    Reusing the IRP (``reuse_irp``, a pool, a lookaside list) rewinds it first, after which writes
    are allowed again; the verifier swaps the class back when it watches it anew.
    """

    __slots__ = ()

    @property
    def status(self) -> int:
        value: int = _STATUS_SLOT.__get__(self, Irp)
        return value

    @status.setter
    def status(self, value: int) -> None:
        if self._index > self.stack_count:
            _touched(self, "status", value)
        _STATUS_SLOT.__set__(self, value)

    @property
    def information(self) -> int:
        value: int = _INFORMATION_SLOT.__get__(self, Irp)
        return value

    @information.setter
    def information(self, value: int) -> None:
        if self._index > self.stack_count:
            _touched(self, "information", value)
        _INFORMATION_SLOT.__set__(self, value)


_STATUS_SLOT: Any = Irp.__dict__["status"]
_INFORMATION_SLOT: Any = Irp.__dict__["information"]


def _touched(irp: Irp, field: str, value: object) -> None:
    """A write to *field* of a completed IRP: the verifiers watching it report it (and raise)."""
    hooks = irp._monitor
    watchers = hooks.hooks if isinstance(hooks, HookChain) else (hooks,)
    for watcher in watchers:
        if isinstance(watcher, Verifier):
            watcher._write_after_completion(irp, field, value)


class VerificationFailed(AssertionError):  # noqa: N818 - a test failure, named as pytest's are
    """:meth:`Verifier.check` found violations, IRPs still outstanding, or errors of deferred completions.

    :ivar violations: the :class:`VerifierViolation` records.
    :ivar outstanding: the :class:`OutstandingIrp` records.
    :ivar errors: exceptions raised by completions the verifier ran later (forced pending), and
        the verifier's own failures (its clock, its hooks).
    """

    def __init__(
        self,
        violations: list[VerifierViolation],
        outstanding: list[OutstandingIrp],
        errors: list[BaseException],
    ) -> None:
        self.violations = violations
        self.outstanding = outstanding
        self.errors = errors
        lines = ["Driver Verifier:"]
        if violations:
            lines.append(f"{len(violations)} violation(s):")
            lines.extend(f"  - {v.message}" for v in violations)
        if outstanding:
            lines.append(f"{len(outstanding)} IRP(s) outstanding (never completed):")
            lines.extend(f"  - {o}" for o in outstanding)
        if errors:
            lines.append(f"{len(errors)} error(s) of its own (completions it deferred, its clock, its hooks):")
            lines.extend(f"  - {type(e).__name__}: {e}" for e in errors)
        super().__init__("\n".join(lines))


#: The call of a watched IRP whose dispatch routine runs in this task (the "actor").
_acting: ContextVar[_Call | None] = ContextVar("airp_verifier_acting", default=None)

#: The codes found at a send that refuse it (the IRP stays where it was); the others are raised
#: when the dispatch routine returns, so that the IRP, sent as asked, is never stranded.
_REFUSING = frozenset((VerifierCode.FORWARD_QUEUED_IRP, VerifierCode.WAIT_ON_SIGNALLED_EVENT))


def _actor() -> DeviceObject | None:
    """The device whose dispatch routine runs in this task, if it still does.

    A dispatch routine that raised never reaches ``dispatched``, so the context variable may
    still name it: it counts only while the request that the shell says this task is working on
    (``current_request``, which ``call_driver`` resets however the routine ends) is its IRP.
    """
    call = _acting.get()
    if call is None:
        return None
    request = current_request.get()
    if request is None or request is not call.irp():
        return None
    return call.device


class _IrpState:
    """What the verifier remembers of one IRP while it is in flight."""

    __slots__ = (
        "at",
        "creator",
        "deferral",
        "dispatches",
        "pending_below",
        "queued",
        "received",
        "resuming",
        "since",
        "snapshots",
        "stop",
        "tokens",
        "violations_due",
    )

    def __init__(self) -> None:
        #: location index -> the device last dispatched there in this trip (tells a skip).
        self.at: dict[int, DeviceObject] = {}
        self.creator: DeviceObject | None = None
        self.deferral: _Deferral | None = None
        self.dispatches = 0
        #: the sender -> the location below which the IRP was pending when it got STATUS_PENDING.
        self.pending_below: dict[DeviceObject, int] = {}
        #: (device, location index) of the queue it is in, if any.
        self.queued: tuple[DeviceObject, int] | None = None
        #: device -> (status, information) when it received the IRP.
        self.received: dict[DeviceObject, tuple[int, int]] = {}
        self.resuming = False
        self.since = 0.0
        #: (sequence, location index, status) at each point of a completion walk (0x224).
        self.snapshots: list[tuple[int, int, int]] = []
        #: the location index the last walk reached (stack_count once completed).
        self.stop = -1
        #: the calls in progress, innermost last.
        self.tokens: list[_Call] = []
        #: violations found mid-walk, raised where raising strands nothing.
        self.violations_due: list[BugCheck] = []


class _Call:
    """One ``call_driver`` of a watched IRP, from ``dispatching`` to ``dispatched``."""

    __slots__ = ("device", "due", "index", "irp", "sender", "sender_location", "sequence", "token")

    token: Token[_Call | None]

    def __init__(
        self,
        irp: Irp,
        device: DeviceObject,
        index: int,
        sender: DeviceObject | None,
        sender_location: int,
        sequence: int,
        due: list[BugCheck],
    ) -> None:
        # Weak: a call left in the task's context by a routine that raised must not keep its IRP.
        self.irp = weakref.ref(irp)
        self.due = due
        self.device = device
        self.index = index
        self.sender = sender
        self.sender_location = sender_location
        self.sequence = sequence


class _Deferral:
    """The routine the verifier puts at a location to defer the completion there (forced pending)."""

    __slots__ = (
        "context",
        "control",
        "counted",
        "index",
        "irp",
        "ran",
        "resumed",
        "routine",
        "saved",
        "sender",
        "verifier",
    )

    def __init__(self, verifier: Verifier, irp: Irp, index: int, sender: DeviceObject | None) -> None:
        loc = irp._stack[index]
        self.verifier = verifier
        self.irp = irp
        self.index = index
        self.sender = sender
        self.routine: CompletionRoutine | None = loc.completion_routine
        self.context: object = loc.completion_context
        self.control: int = loc.control
        self.ran = False
        self.counted = False
        self.resumed = False
        self.saved: tuple[int, int] = (0, 0)
        loc.completion_routine = self
        loc.completion_context = None
        loc.control = _INVOKE_BITS | (loc.control & _PENDING_RETURNED)

    def restore(self, *, pending: bool) -> None:
        loc = self.irp._stack[self.index]
        mark = _PENDING_RETURNED if pending or loc.control & _PENDING_RETURNED else 0
        loc.completion_routine = self.routine
        loc.completion_context = self.context
        loc.control = (self.control & ~_PENDING_RETURNED) | mark

    def __call__(self, owner: DeviceObject | None, irp: Irp, context: object) -> int:
        # The walk reached the sender's location while the lower dispatch routine still runs: stop
        # here, put the location back as it was (marked pending: the sender is told
        # STATUS_PENDING), and finish the walk later from the event loop.
        self.ran = True
        self.restore(pending=True)
        irp._index = self.index
        self.saved = (irp.status, irp.information)
        irp.status = STATUS_PENDING
        irp.information = 0
        self.verifier._schedule(self)
        return _SMPR

    def resume(self) -> None:
        verifier = self.verifier
        irp = self.irp
        state = verifier._states.get(irp)
        if self.resumed:
            return
        self.resumed = True
        if state is not None and state.deferral is self:
            state.deferral = None
        if irp._index != self.index or irp.completed:
            return  # a driver went on with it meanwhile (reported as 0x307 when it did)
        irp.status, irp.information = self.saved
        if state is not None:
            state.resuming = True
        try:
            complete_request(irp)
        except BaseException as error:  # reported by check(): nobody else can see it
            verifier._errors.append(error)
            if isinstance(error, BugCheck) and irp._final_error is None:
                irp._final_error = error
        finally:
            if state is not None:
                state.resuming = False

    def __repr__(self) -> str:
        return f"<verifier: completion deferred at location {self.index + 1} (forced pending)>"


def _call_soon(callback: Callable[[], None]) -> None:
    """Run *callback* on the next turn of the running event loop, whichever backend runs."""
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        native.call_soon(callback)
        return
    import trio  # the only other backend anyio runs on

    async def run() -> None:
        callback()

    trio.lowlevel.spawn_system_task(run)


#: Every task the verifier started on asyncio (the loop keeps only weak references to tasks).
_background: set[asyncio.Task[None]] = set()


def _spawn(async_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run *async_fn* in a task of its own on the running event loop, in an empty context.

    Empty: the task must not inherit the request the caller is working on (``current_request``)
    or the dispatch routine it is in, or the IRPs it sends would be taken for that driver's.
    """
    native = anyio.lowlevel.current_token().native_token
    empty = contextvars.Context()
    if isinstance(native, asyncio.AbstractEventLoop):
        task = empty.run(native.create_task, async_fn())
        _background.add(task)
        task.add_done_callback(_background.discard)
        return
    import trio  # the only other backend anyio runs on

    empty.run(trio.lowlevel.spawn_system_task, async_fn)


def _loop_running() -> bool:
    try:
        anyio.lowlevel.current_token()
    except Exception:  # NoEventLoopError, or a backend's own "no loop" error
        return False
    return True


_verifier_numbers = itertools.count(1)


class _RunClock:
    """``anyio.current_time()`` while a loop runs, else ``time.monotonic()``; once a run has
    ended (a fixture's teardown), the last time read from its loop, so that "held for" stays on
    the run's clock (virtual time under ``airp.testing``) instead of mixing two clocks."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: float | None = None

    def __call__(self) -> float:
        try:
            now = anyio.current_time()
        except Exception:  # no event loop runs
            return self.last if self.last is not None else time.monotonic()
        self.last = now
        return now


def _nt_error(status: int) -> bool:
    return (status & 0xFFFF_FFFF) >> 30 == 3


class Verifier:
    """Driver Verifier for airp: opt-in checks, forced pending, low resources and IRP tracking.

    Turn it on for a whole I/O manager with ``IoManager(verifier=Verifier(...))`` (it watches
    every IRP the manager builds, and the IRPs drivers allocate while working on them), or from
    pytest with the ``airp_verifier`` fixture or marker (``docs/testing.md``).

    Checks (all on by default; each applies when the driver that broke the rule is verified):
    0x228, 0x21C, 0x224, 0x213, 0x214, 0x23B, 0x20E, 0x20F, 0x210, 0x215, 0x216, 0x219, 0x205,
    0x209, 0x239, 0x307; what each means in airp is in ``docs/testing.md`` ("Driver Verifier").

    "An IRP the driver does not understand" (0x213, 0x214, 0x23B): a PnP, power or WMI IRP whose
    driver has no dispatch routine of its own for the major function, or whose minor function is
    not one the driver understands.  A driver understands the minors it lists in an optional
    ``understood_minors`` attribute (``{IrpMajor.PNP: {PnpMinor.START_DEVICE, ...}}``), and
    without one every minor documented for the major (``PnpMinor``, ``PowerMinor``, WMI's
    0x00-0x0B); an undocumented minor (0xFF, as Windows' fake IRPs use) is understood by no one.

    :param drivers: the drivers to verify, by object or name; ``None`` (the default) verifies all.
    :param checks: the codes of the checks to run (``None``: all of :attr:`CHECKS`).
    :param force_pending: the probability that a verified driver's ``call_driver`` is made to
        return STATUS_PENDING (``True`` = always, ``False`` = never, the default).
    :param seed: seeds the generator that draws forced pendings, so that a run is reproducible.
    :param low_resources: a :class:`~airp.LowResourcesSimulation` to install on the allocators
        of verified drivers (``IrpAllocator(owner=driver)``) that have none, when the verifier
        first sees one of their devices, and on those given to :meth:`cover`.
    :param raise_on_violation: raise the bug check where the violation happens (the default);
        with ``False`` violations are only recorded in :attr:`violations`.
    :param fake_pnp_irps: send every newly started PnP stack that has a verified driver a PnP IRP
        of a minor no driver understands (0xFF), as Windows' Driver Verifier does with I/O
        verification on: on by default, as there.  It goes from a task of the verifier's, just
        after IRP_MN_START_DEVICE succeeded, and must come back STATUS_NOT_SUPPORTED: a driver
        that changes its status or information and passes it down is 0x213 / 0x214, one that
        completes it with another status 0x23B.  The violation is recorded (:meth:`check` fails)
        rather than raised, since no call of the caller's is under way; ``False`` sends none.
    :param clock: what "now" is for IRP tracking (default: ``anyio.current_time()`` when a loop
        runs, else ``time.monotonic()``).  One that raises is replaced by that default for the rest
        of the run; the failure is kept in :attr:`errors` (so :meth:`check` fails) and reported
        once through :func:`sys.unraisablehook`, and no IRP is the worse for it.
    :raises ValueError: for an unknown check code or a probability outside 0.0 to 1.0.
    :raises TypeError: for a driver that is neither a name nor a :class:`~airp.Driver`, *drivers*
        or *checks* that is not a collection, a seed that is not an int, or a *clock* that is not
        a plain function.
    :ivar violations: every violation found, oldest first (also when it was raised).
    """

    #: The codes of the checks a verifier can run.
    CHECKS: frozenset[VerifierCode] = frozenset(VerifierCode(code) for code in _RULES)

    #: Bug check 0xD5, DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL: a driver wrote ``irp.status`` or
    #: ``irp.information`` after the IRP completed.  Accepted in *checks* with the codes above.
    WRITE_AFTER_COMPLETION = _WRITE_AFTER_COMPLETION

    def __init__(
        self,
        *,
        drivers: Iterable[str | Driver] | None = None,
        checks: Iterable[int] | None = None,
        force_pending: float | bool = False,
        seed: int = 0,
        low_resources: LowResourcesSimulation | None = None,
        raise_on_violation: bool = True,
        clock: Callable[[], float] | None = None,
        fake_pnp_irps: bool = True,
    ) -> None:
        self._names: set[str] | None = None
        self._objects: set[int] = set()
        if drivers is not None:
            if isinstance(drivers, (str, Driver)):
                drivers = [drivers]
            elif not isinstance(drivers, Iterable):
                raise must_be("drivers", "a driver name, an airp.Driver, a collection of them, or None", drivers)
            self._names = set()
            for driver in drivers:
                if isinstance(driver, str):
                    self._names.add(driver)
                elif isinstance(driver, Driver):
                    self._objects.add(id(driver))
                else:
                    raise TypeError(f"Verifier(drivers=...) takes driver names or airp.Driver objects, got {driver!r}")
        self._touch_check = True
        if checks is None:
            self._checks = set(self.CHECKS)
        else:
            if not isinstance(checks, Iterable):
                raise must_be("checks", "a collection of check codes (VerifierCode) or None", checks)
            self._checks = set()
            self._touch_check = False
            for code in checks:
                if code == _WRITE_AFTER_COMPLETION and type(code) is not bool:
                    self._touch_check = True
                    continue
                if code not in self.CHECKS:
                    known = ", ".join(f"{int(c):#x}" for c in sorted(self.CHECKS))
                    raise ValueError(
                        f"Verifier(checks=...): {code!r} is not a check the verifier has; expected some of {known},"
                        f" or {_WRITE_AFTER_COMPLETION:#x} (Verifier.WRITE_AFTER_COMPLETION)"
                    )
                self._checks.add(VerifierCode(code))
        if isinstance(force_pending, bool):
            probability = 1.0 if force_pending else 0.0
        elif isinstance(force_pending, (int, float)):
            probability = float(force_pending)
        else:
            raise TypeError(f"force_pending must be a probability (0.0 to 1.0) or a bool, got {force_pending!r}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"force_pending must be between 0.0 (never) and 1.0 (always), got {force_pending!r}")
        if type(seed) is not int:
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        if low_resources is not None and not isinstance(low_resources, LowResourcesSimulation):
            raise TypeError(f"low_resources must be an airp.LowResourcesSimulation, got {low_resources!r}")
        self.force_pending = probability
        self.seed = seed
        self.low_resources = low_resources
        self.raise_on_violation = bool(raise_on_violation)
        # Read inside the hooks, where nothing can be awaited: a coroutine function would give
        # a coroutine for a time, found out at the first IRP.
        check_plain_function("clock", clock, signature="() -> seconds", why="it is read inside the IRP's hooks")
        self._clock = clock if clock is not None else _RunClock()
        self._rng = random.Random(seed)
        self.violations: list[VerifierViolation] = []
        self._errors: list[BaseException] = []
        self._reported = False
        #: The IRPs in flight and what is known of each (an IRP leaves when it completes).
        self._states: dict[Irp, _IrpState] = {}
        #: Where the record of an IRP that left flight with calls still open is put on the IRP.
        self._key = f"_airp_verifier_state_{next(_verifier_numbers)}"
        self._sequence = 0
        self._watched = 0
        self._forced = 0
        self._armed = 0
        self._checks_run: Counter[int] = Counter()
        self._found: Counter[int] = Counter()
        self._covered: set[int] = set()
        self._seen_drivers: set[int] = set()
        self.fake_pnp_irps = bool(fake_pnp_irps)
        self._fakes_sent = 0

    # -- configuration -------------------------------------------------------------------------

    def verifies(self, driver: Driver | None) -> bool:
        """Whether *driver* is verified (``None``, the I/O manager, never is).

        :param driver: a driver object, or ``None``.
        :returns: True if the verifier's checks and stress options apply to it.
        :raises TypeError: if *driver* is neither a Driver nor ``None`` (a name says nothing of
            which object: ask with the driver).
        """
        if driver is None:
            return False
        if not isinstance(driver, Driver):
            raise must_be("verifies(driver): driver", "an airp.Driver or None", driver)
        if self._names is None:
            return True
        return id(driver) in self._objects or driver.name in self._names

    def cover(self, *allocators: IrpAllocator) -> None:
        """Install this verifier on *allocators*: its low-resources simulation (if it has one and
        the allocator has none), and watching every IRP they hand out.

        :param allocators: the allocators.
        :raises TypeError: if one is not an :class:`~airp.IrpAllocator`.
        """
        for allocator in allocators:
            if not isinstance(allocator, IrpAllocator):
                raise must_be("Verifier.cover(*allocators): each allocator", "an airp.IrpAllocator", allocator)
            self._install(allocator, watch=True)

    def _install(self, allocator: IrpAllocator, *, watch: bool) -> None:
        if id(allocator) in self._covered:
            return
        self._covered.add(id(allocator))
        if self.low_resources is not None and allocator.low_resources is None:
            allocator.low_resources = self.low_resources
        if watch and allocator.monitor is None:
            allocator.monitor = self

    def _first_sight(self, driver: Driver) -> None:
        self._seen_drivers.add(id(driver))
        if self.low_resources is not None and self.verifies(driver):
            for allocator in list(driver._irp_allocators):
                self._install(allocator, watch=False)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _state(self, irp: Irp) -> _IrpState:
        state = self._states.get(irp)
        if state is None:
            # Back in flight (sent again by its creator, or a dispatch routine returning after
            # the IRP completed): what was put aside on the IRP, or a fresh record.
            state = getattr(irp, self._key, None)
            if state is None:
                state = _IrpState()
            else:
                delattr(irp, self._key)
            self._states[irp] = state
        return state

    def _settle(self, irp: Irp, state: _IrpState) -> None:
        """*irp* has left flight (completed, or handed back to its creator): stop tracking it.

        The verifier holds only IRPs in flight, so that what it holds is what :meth:`outstanding`
        reports and nothing else.  If calls of it are still open (dispatch routines that have not
        returned: the usual synchronous completion; or routines that raised or were cancelled,
        which never will), their record goes onto the IRP itself: a routine that returns finds
        it there, and one that never returns leaves it to be freed with the IRP.
        """
        self._states.pop(irp, None)
        if state.tokens:
            setattr(irp, self._key, state)

    def _on(self, code: VerifierCode, driver: Driver | None) -> bool:
        if code not in self._checks or not self.verifies(driver):
            return False
        self._checks_run[code] += 1
        return True

    def _violation(
        self,
        code: VerifierCode,
        irp: Irp,
        device: DeviceObject | None,
        detail: str,
        p3: object = 0,
        p4: object = 0,
    ) -> BugCheck:
        driver = device.driver if device is not None else None
        rule = f"{driver!r} {_RULES[code]}: {detail}" if driver is not None else f"{_RULES[code]}: {detail}"
        check = BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            rule,
            parameters=(code, irp, p3, p4),
            irp=irp,
            device=device,
            driver=driver,
        )
        self.violations.append(VerifierViolation(code, _RULES[code], irp, device, driver, check.parameters, str(check)))
        self._found[code] += 1
        return check

    def _raise(self, check: BugCheck) -> None:
        if self.raise_on_violation:
            raise check

    def _now(self) -> float:
        """The tracking clock; one that raises is replaced by the run's clock for good."""
        try:
            return self._clock()
        except Exception as error:
            if isinstance(self._clock, _RunClock):
                raise  # our own clock cannot fail this way; if it does, the hook's guard takes it
            clock = self._clock
            self._clock = _RunClock()
            self._tool_failed(
                MonitorHookError(
                    self,
                    f"clock ({clock!r})",
                    None,
                    error,
                    "the verifier tracks IRPs on the run's clock from now on (held-for times mix the two clocks)",
                )
            )
            return self._clock()

    def _hook_failed(self, hook: str, irp: Irp, error: Exception) -> None:
        # A failure of the verifier itself (not a violation it found): it must not strand the
        # IRP, so the verifier stops watching it and forgets it, and the failure is reported.
        try:
            if hook == "watch" or set_aside(irp, self):
                self._states.pop(irp, None)
                self._tool_failed(
                    MonitorHookError(
                        self, hook, irp, error, "the verifier stopped watching that IRP, which went on unchecked"
                    )
                )
        except Exception:
            pass

    def _tool_failed(self, failure: MonitorHookError) -> None:
        self._errors.append(failure)
        if not self._reported:
            self._reported = True
            report_hook_error(failure)

    def _after_start(self, irp: Irp) -> None:
        """*irp* completed successfully: if it was a PnP manager's IRP_MN_START_DEVICE for a stack
        with a verified driver, send that stack an IRP it does not understand, as Windows' Driver
        Verifier does to every newly started PnP stack (I/O verification)."""
        top_location = irp._stack[irp.stack_count - 1]
        top = top_location.device
        if (
            top is None
            or top_location.major != IrpMajor.PNP
            or top_location.minor != PnpMinor.START_DEVICE
            or top.device_node is None
            or not _loop_running()
        ):
            return
        stack = []
        device: DeviceObject | None = get_attached_device(top)
        while device is not None:
            stack.append(device)
            device = device.lower_device
        if not any(self.verifies(d.driver) for d in stack):
            return
        hooks = irp._monitor if irp._monitor is not None else self

        async def send() -> None:
            await self._send_fake_pnp(top, hooks)

        _spawn(send)

    async def _send_fake_pnp(self, top: DeviceObject, hooks: MonitorHooks) -> None:
        """Send ``top``'s stack a PnP IRP of minor 0xFF (undocumented: understood by no driver)
        with STATUS_NOT_SUPPORTED, as the PnP manager sends it; every driver must pass it down
        untouched and the bottom complete it with that status.  The checks on the way are the
        usual ones: 0x213 / 0x214 for a driver that changes it and passes it down, 0x23B for one
        that completes it with another status, 0x20E never (it is initialised).

        Runs in a task of the verifier's, after the start: a violation is recorded in
        :attr:`violations` (and so fails :meth:`check`), but it cannot be raised at a call of the
        caller's; any other exception is kept in :attr:`errors`.  It takes the device node's turn,
        as the PnP manager's own requests do (one PnP request of a node at a time): it goes once
        the start has finished, and a removal asked for meanwhile waits for it, or goes first and
        leaves it nothing to send.

        On cancellation (the run ends): the turn is waited for shielded, and the IRP, once sent,
        is waited for as any awaited IRP is (cancelled, then waited for within the limit).
        """
        node = top.device_node
        lock = node._busy
        if lock is None:
            lock = node._busy = anyio.Lock(fast_acquire=True)  # as PnpManager._serialised makes it
        with anyio.CancelScope(shield=True):
            await lock.acquire()
        try:
            top = get_attached_device(top)
            device: DeviceObject | None = top
            while device is not None:
                if device.deleted or device.pnp_state in (PnpState.REMOVED, PnpState.SURPRISE_REMOVED):
                    return  # removed meanwhile: nothing to verify any more
                device = device.lower_device
            irp = Irp(top.stack_size)
            hooks.watch(irp)
            location = irp._stack[irp.stack_count - 1]
            location.major = IrpMajor.PNP
            location.minor = _FAKE_PNP_MINOR
            irp.status = STATUS_NOT_SUPPORTED
            self._fakes_sent += 1
            try:
                await call_driver(top, irp)
                await irp
            except Exception as error:
                if not any(v.irp is irp for v in self.violations):
                    self._errors.append(error)
        finally:
            lock.release()

    def _write_after_completion(self, irp: Irp, field: str, value: object) -> None:
        """Bug check 0xD5 DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL: a driver wrote *field* of *irp* after it completed.

        Reference 2.9 and 5.6: the I/O manager frees a request when its final stage has run;
        10.1: under I/O verification IRPs come from special pool, so in Windows the write lands
        in freed special pool and stops the machine with DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL
        (parameters: the address, 1 for a write, the writing code, reserved).  airp's IRP is
        still there, and without the verifier the write would silently change what the
        requester reads; here it is refused.
        """
        actor = _actor()
        driver = actor.driver if actor is not None else None
        if actor is not None:
            if not self.verifies(driver):
                return
        elif self._names is not None:
            return  # written from outside any dispatch routine: which driver did it is unknown
        self._checks_run[_WRITE_AFTER_COMPLETION] += 1
        old = _STATUS_SLOT.__get__(irp, Irp) if field == "status" else _INFORMATION_SLOT.__get__(irp, Irp)
        shown_old = NtStatus(old).name if field == "status" else repr(old)
        try:
            shown_new = NtStatus(value).name if field == "status" else repr(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            shown_new = repr(value)
        who = f"{driver!r} " if driver is not None else ""
        rule = (
            f"{who}{_TOUCH_RULE}: irp.{field} = {shown_new} (it completed with {shown_old}); the I/O manager has"
            " handed the result to the requester and freed the IRP (in Windows the write lands in freed special"
            f" pool). Set irp.{field} before complete_request"
        )
        check = BugCheck(
            _WRITE_AFTER_COMPLETION,
            rule,
            parameters=(irp, 1, actor if actor is not None else 0, 0),
            irp=irp,
            device=actor,
            driver=driver,
        )
        self.violations.append(
            VerifierViolation(
                _WRITE_AFTER_COMPLETION,
                _TOUCH_RULE,
                irp,
                actor,
                driver,
                check.parameters,
                str(check),
                _WRITE_AFTER_COMPLETION,
            )
        )
        self._found[_WRITE_AFTER_COMPLETION] += 1
        self._raise(check)

    def _schedule(self, deferral: _Deferral) -> None:
        state = self._state(deferral.irp)
        state.deferral = deferral
        _call_soon(deferral.resume)

    def _understands(self, driver: Driver, major: int, minor: int) -> bool:
        routine = driver.major_function[major]
        if getattr(routine, "__func__", None) is Driver._unhandled:
            return False
        declared = getattr(driver, "understood_minors", None)
        if isinstance(declared, Mapping) and major in declared:
            return minor in declared[major]
        return minor in _KNOWN_MINORS[major]

    # -- the hooks (MonitorHooks) --------------------------------------------------------------

    def watch(self, irp: Irp) -> Irp:
        """Watch *irp* (the I/O manager or an allocator calls it).

        :param irp: the IRP.
        :returns: *irp*.
        """
        try:
            irp._monitor = self
            self._watched += 1
            self._states[irp] = _IrpState()
            if type(irp) is _CompletedIrp:
                irp.__class__ = Irp  # type: ignore[assignment]  # reinitialised for a new request: plain slots again
            return irp
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("watch", irp, error)
            return irp

    def linked(self, child: Irp, parent: Irp) -> None:
        """*child* was allocated while a driver worked on *parent*: that driver is its creator."""
        try:
            index = parent._index
            if index < parent.stack_count:
                self._state(child).creator = parent._stack[index].device
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("linked", child, error)

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        """``call_driver`` is about to run *device*'s dispatch routine: the checks on what the
        sender did, and the decision to force pending."""
        try:
            state = self._state(irp)
            self._sequence += 1
            index = irp._index
            n = irp.stack_count
            stack = irp._stack
            driver = device.driver
            if id(driver) not in self._seen_drivers:
                self._first_sight(driver)
            previous = state.at.get(index)
            skipped = previous is not None and previous is not device
            if skipped:
                sender: DeviceObject | None = previous
            elif index + 1 < n:
                sender = stack[index + 1].device
            else:
                sender = state.creator if state.creator is not None else _actor()
            sender_driver = sender.driver if sender is not None else None
            loc = stack[index]
            major = loc.major
            due: list[BugCheck] = []
            self._check_send(irp, state, index, sender, sender_driver, skipped, loc, major, due)
            if due and self.raise_on_violation and due[0].verifier_code in _REFUSING:
                # Refuse the send, as call_driver's own checks do: the IRP stays where it was.
                irp._index = index + 1
                raise due[0]
            state.dispatches += 1
            state.at[index] = device
            state.received[device] = (irp.status, irp.information)
            state.since = self._now()
            state.stop = -1
            sender_location = index if skipped else index + 1
            call = _Call(irp, device, index, sender, sender_location, self._sequence, due)
            left = _acting.get()
            if left is not None and current_request.get() is not left.irp():
                # The call left here by a dispatch routine that raised or was cancelled (it never
                # reached ``dispatched``): drop it, or each new call's token would keep the one
                # before alive, and with it every such IRP this task ever sent.
                _acting.set(None)
            call.token = _acting.set(call)
            state.tokens.append(call)
            # Forced pending: only for a verified sender, one deferral per location.
            if (
                self.force_pending
                and sender_driver is not None
                and self.verifies(sender_driver)
                and state.deferral is None
                and not isinstance(loc.completion_routine, _Deferral)
                and (self.force_pending >= 1.0 or self._rng.random() < self.force_pending)
                and _loop_running()
            ):
                self._armed += 1
                _Deferral(self, irp, index, sender)
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("dispatching", irp, error)

    def _check_send(
        self,
        irp: Irp,
        state: _IrpState,
        index: int,
        sender: DeviceObject | None,
        sender_driver: Driver | None,
        skipped: bool,
        loc: Any,
        major: int,
        due: list[BugCheck],
    ) -> None:
        n = irp.stack_count
        actor = _actor()
        queued = state.queued
        if (
            queued is not None
            and actor is not None
            and actor is not queued[0]
            and self._on(VerifierCode.FORWARD_QUEUED_IRP, actor.driver)
        ):
            due.append(
                self._violation(
                    VerifierCode.FORWARD_QUEUED_IRP,
                    irp,
                    actor,
                    f"{irp!r} is in queue of {queued[0]!r}; it belongs to that driver until it completes it",
                )
            )
        elif queued is not None:
            state.queued = None  # its queue's own driver took it out and sends it on
        if (
            state.deferral is not None
            and actor is not None
            and self._on(VerifierCode.WAIT_ON_SIGNALLED_EVENT, actor.driver)
        ):
            due.append(
                self._violation(
                    VerifierCode.WAIT_ON_SIGNALLED_EVENT,
                    irp,
                    actor,
                    "it sent the IRP again while its completion was still pending below (the verifier had"
                    " deferred it): after STATUS_PENDING wait for the completion routine before touching the IRP",
                )
            )
        elif (
            actor is not None
            and actor in state.pending_below
            and irp._index < state.pending_below[actor]
            and self._on(VerifierCode.WAIT_ON_SIGNALLED_EVENT, actor.driver)
        ):
            due.append(
                self._violation(
                    VerifierCode.WAIT_ON_SIGNALLED_EVENT,
                    irp,
                    actor,
                    "it sent the IRP again after call_driver returned STATUS_PENDING and before the IRP came back to it",
                )
            )
        if index + 1 == n and state.dispatches == 0:
            code = _STATUS_RULE_MAJORS.get(major)
            if code is not None and irp.status != _NOT_SUPPORTED and self._on(code, sender_driver):
                due.append(
                    self._violation(
                        code,
                        irp,
                        sender,
                        f"its status was {NtStatus(irp.status).name}; set irp.status = STATUS_NOT_SUPPORTED before the first call_driver",
                        irp.status,
                    )
                )
        if sender is None or sender_driver is None:
            return
        received = state.received.get(sender)
        if major in _STATUS_RULE_MAJORS and received is not None:
            status, information = irp.status, irp.information
            if (
                status == _NOT_SUPPORTED
                and received[0] != _NOT_SUPPORTED
                and self._on(VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED, sender_driver)
            ):
                due.append(
                    self._violation(
                        VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED,
                        irp,
                        sender,
                        f"it received {NtStatus(received[0]).name} and passed it down as STATUS_NOT_SUPPORTED",
                        received[0],
                    )
                )
            failed = status != received[0] and status != _NOT_SUPPORTED and _nt_error(status)
            if failed and major == IrpMajor.PNP and self._on(VerifierCode.FAILED_PNP_PASSED_DOWN, sender_driver):
                due.append(
                    self._violation(
                        VerifierCode.FAILED_PNP_PASSED_DOWN,
                        irp,
                        sender,
                        f"it set {NtStatus(status).name}; a driver that fails a PnP IRP completes it",
                        status,
                    )
                )
            if failed and major == IrpMajor.POWER and self._on(VerifierCode.FAILED_POWER_PASSED_DOWN, sender_driver):
                due.append(
                    self._violation(
                        VerifierCode.FAILED_POWER_PASSED_DOWN,
                        irp,
                        sender,
                        f"it set {NtStatus(status).name}; a driver that fails a power IRP completes it",
                        status,
                    )
                )
            if not self._understands(sender_driver, major, loc.minor):
                if status != received[0] and self._on(VerifierCode.STATUS_CHANGED_NOT_UNDERSTOOD, sender_driver):
                    due.append(
                        self._violation(
                            VerifierCode.STATUS_CHANGED_NOT_UNDERSTOOD,
                            irp,
                            sender,
                            f"minor {loc.minor:#x}: {NtStatus(received[0]).name} became {NtStatus(status).name}; pass such"
                            " an IRP down untouched",
                            received[0],
                            status,
                        )
                    )
                if information != received[1] and self._on(
                    VerifierCode.INFORMATION_CHANGED_NOT_UNDERSTOOD, sender_driver
                ):
                    due.append(
                        self._violation(
                            VerifierCode.INFORMATION_CHANGED_NOT_UNDERSTOOD,
                            irp,
                            sender,
                            f"minor {loc.minor:#x}: information {received[1]!r} became {information!r}; pass such an IRP"
                            " down untouched",
                            received[1],
                            information,
                        )
                    )
        if not skipped and index + 1 < n and self._on(VerifierCode.COPIED_WITHOUT_ROUTINE, sender_driver):
            above = irp._stack[index + 1]
            if (
                loc.completion_routine is None
                and not loc.control & _INVOKE_BITS
                and loc.major == above.major
                and loc.minor == above.minor
                and loc.parameters is above.parameters
                and loc.file_object is above.file_object
            ):
                due.append(
                    self._violation(
                        VerifierCode.COPIED_WITHOUT_ROUTINE,
                        irp,
                        sender,
                        "it called copy_current_stack_location_to_next() and no set_completion_routine(); a driver that"
                        " wants nothing back calls skip_current_stack_location() (pass_down)",
                    )
                )

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        """The dispatch routine of *device* returned *status*: 0x224, and what forced pending
        makes ``call_driver`` return."""
        try:
            state = self._states.get(irp)
            if state is None:
                if getattr(irp, self._key, None) is None:
                    return status  # not tracked (set aside after a failure of the verifier's own)
                state = self._state(irp)
            tokens = state.tokens
            call: _Call | None = None
            for position in range(len(tokens) - 1, -1, -1):
                if tokens[position].device is device:
                    call = tokens[position]
                    # Calls after it are those of dispatch routines that raised: gone.
                    del tokens[position:]
                    break
            if call is None:
                return status
            try:
                _acting.reset(call.token)
            except (ValueError, RuntimeError):
                _acting.set(tokens[-1] if tokens else None)
            index = call.index
            result = status
            loc = irp._stack[index]
            routine = loc.completion_routine if loc is not _UNUSED else None
            deferral = state.deferral
            if isinstance(routine, _Deferral) and routine.index == index and not routine.ran:
                # Nothing completed it before the dispatch routine returned: no forcing needed.
                routine.restore(pending=False)
            elif deferral is not None and deferral.index == index and not deferral.resumed:
                if status != _PENDING and not deferral.counted:
                    deferral.counted = True
                    self._forced += 1
                result = STATUS_PENDING
            if result == _PENDING and call.sender is not None and not irp.completed:
                state.pending_below[call.sender] = call.sender_location
            if (
                status != _PENDING
                and state.stop >= index
                and self._on(VerifierCode.DISPATCH_STATUS_MISMATCH, device.driver)
            ):
                expected = None
                for seq, at, st in state.snapshots:
                    if seq > call.sequence and at <= index:
                        expected = st
                if expected is not None and int(expected) != int(status):
                    self._raise(
                        self._violation(
                            VerifierCode.DISPATCH_STATUS_MISMATCH,
                            irp,
                            device,
                            f"it returned {status.name} but the IRP passed its location with {NtStatus(expected).name}",
                            status,
                            expected,
                        )
                    )
            if irp._index >= irp.stack_count and (state.deferral is None or irp.completed):
                self._settle(irp, state)
            if call.due and self.raise_on_violation:
                raise call.due[0]
            return result
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("dispatched", irp, error)
            return status

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        """*irp* entered a queue of *device*."""
        try:
            state = self._state(irp)
            state.queued = (device, irp._index)
            state.since = self._now()
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("queued", irp, error)

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        """*irp* left that queue for its driver."""
        try:
            self._state(irp).queued = None
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("dequeued", irp, error)

    def completing(self, irp: Irp) -> None:
        """``complete_request`` begins: 0x209, 0x307, 0x239, 0x23B, 0x216; the first snapshot for 0x224."""
        try:
            state = self._state(irp)
            self._sequence += 1
            index = irp._index
            n = irp.stack_count
            if not state.resuming and not (irp.routine_error is not None and irp.status == _INTERNAL_ERROR):
                # (Not when airp completes the IRP of a routine that raised, a bug check of
                # ours among others: the rules are about what drivers do, and a second report
                # of the same IRP would only hide the first.)
                self._check_completion(irp, state, index, n)
            state.snapshots.append((self._sequence, index, irp.status))
            state.stop = max(state.stop, index)
            state.queued = None
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("completing", irp, error)

    def _check_completion(self, irp: Irp, state: _IrpState, index: int, n: int) -> None:
        actor = _actor()
        queued = state.queued
        if state.deferral is not None:
            who = actor if actor is not None else state.deferral.sender
            if self._on(VerifierCode.WAIT_ON_SIGNALLED_EVENT, who.driver if who is not None else None):
                self._raise(
                    self._violation(
                        VerifierCode.WAIT_ON_SIGNALLED_EVENT,
                        irp,
                        who,
                        "it completed the IRP after call_driver returned STATUS_PENDING, before its completion came back"
                        " up (the verifier had deferred it); wait for the completion routine (forward_and_wait)",
                    )
                )
        elif irp.cancel:
            pass  # a cancel routine completes it from the canceller's task: not the actor's doing
        elif (
            queued is not None
            and actor is not None
            and actor is not queued[0]
            and self._on(VerifierCode.COMPLETE_QUEUED_IRP, actor.driver)
        ):
            self._raise(
                self._violation(
                    VerifierCode.COMPLETE_QUEUED_IRP,
                    irp,
                    actor,
                    f"{irp!r} is in a queue of {queued[0]!r}; it belongs to that driver until it completes it",
                )
            )
        elif (
            actor is not None
            and actor in state.pending_below
            and index < state.pending_below[actor]
            and self._on(VerifierCode.WAIT_ON_SIGNALLED_EVENT, actor.driver)
        ):
            self._raise(
                self._violation(
                    VerifierCode.WAIT_ON_SIGNALLED_EVENT,
                    irp,
                    actor,
                    "it completed the IRP after call_driver returned STATUS_PENDING, before the IRP came back to it",
                )
            )
        if state.dispatches == 0:
            creator = state.creator if state.creator is not None else actor
            if creator is not None and self._on(VerifierCode.COMPLETE_NEVER_SENT, creator.driver):
                self._raise(
                    self._violation(
                        VerifierCode.COMPLETE_NEVER_SENT,
                        irp,
                        creator,
                        "complete_request on an IRP no call_driver ever sent; send it, or free it",
                    )
                )
        if index >= n:
            return
        loc = irp._stack[index]
        holder = loc.device
        major = loc.major
        if holder is None or major not in _STATUS_RULE_MAJORS:
            return
        received = state.received.get(holder)
        if received is None:
            return
        status = irp.status
        if (
            status == _NOT_SUPPORTED
            and received[0] != _NOT_SUPPORTED
            and self._on(VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED, holder.driver)
        ):
            self._raise(
                self._violation(
                    VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED,
                    irp,
                    holder,
                    f"it received {NtStatus(received[0]).name} and completed it as STATUS_NOT_SUPPORTED",
                    received[0],
                )
            )
        if (
            holder.lower_device is not None
            and status != received[0]
            and not self._understands(holder.driver, major, loc.minor)
            and self._on(VerifierCode.COMPLETED_NOT_UNDERSTOOD, holder.driver)
        ):
            self._raise(
                self._violation(
                    VerifierCode.COMPLETED_NOT_UNDERSTOOD,
                    irp,
                    holder,
                    f"minor {loc.minor:#x}: it completed it with {NtStatus(status).name} (received"
                    f" {NtStatus(received[0]).name}); pass such an IRP down untouched",
                    received[0],
                    status,
                )
            )

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        """A completion routine returned: 0x228, and where the walk is (for 0x224 and 0x307)."""
        try:
            state = self._state(irp)
            self._sequence += 1
            index = irp._index
            n = irp.stack_count
            state.snapshots.append((self._sequence, index, irp.status))
            state.stop = max(state.stop, index)
            self._passed(state, index - 1)
            if (
                result != _SMPR
                and owner is not None
                and index < n
                and irp.pending_returned
                and not irp._stack[index].control & _PENDING_RETURNED
                and self._on(VerifierCode.PENDING_NOT_PROPAGATED, owner.driver)
            ):
                name = getattr(routine, "__qualname__", None) or repr(routine)
                # Raised where it strands nothing: at the end of the walk (completed, or a routine
                # that stops it); the walk itself must finish first.
                state.violations_due.append(
                    self._violation(
                        VerifierCode.PENDING_NOT_PROPAGATED,
                        irp,
                        owner,
                        f"routine {name} ran with irp.pending_returned set and returned without irp.mark_pending();"
                        " a routine that does not return STATUS_MORE_PROCESSING_REQUIRED must do"
                        " 'if irp.pending_returned: irp.mark_pending()'",
                        routine,
                    )
                )
            if result == _SMPR:
                if index >= n:
                    state.at.clear()
                    if state.deferral is None:
                        self._settle(irp, state)  # handed back to its creator
                self._raise_due(irp, state)
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("routine_ran", irp, error)

    def _passed(self, state: _IrpState, index: int) -> None:
        """The walk has processed location *index*: forget what lies at or below it."""
        for location in [i for i in state.at if i <= index]:
            del state.at[location]
        for sender in [s for s, i in state.pending_below.items() if i <= index + 1]:
            del state.pending_below[sender]

    def _raise_due(self, irp: Irp, state: _IrpState) -> None:
        due = state.violations_due
        if due:
            state.violations_due = []
            if self.raise_on_violation:
                if irp._final_error is None:
                    irp._final_error = due[0]
                    waiter = irp._waiter
                    if waiter is not None:
                        waiter.set()
                raise due[0]

    def completed(self, irp: Irp) -> None:
        """The walk reached the top: the IRP is no longer tracked (once no dispatch routine of it
        is still running)."""
        try:
            state = self._states.get(irp)
            if state is None:
                return
            state.stop = irp.stack_count
            state.at.clear()
            state.pending_below.clear()
            self._settle(irp, state)
            if self.fake_pnp_irps and irp.status == STATUS_SUCCESS:
                self._after_start(irp)
            if self._touch_check and type(irp) is Irp:
                # From now on a write to its status or information is a write to a freed IRP.
                irp.__class__ = _CompletedIrp
            self._raise_due(irp, state)
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("completed", irp, error)

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        """``cancel_irp``: a cancel routine takes the IRP out of its queue itself."""
        try:
            state = self._states.get(irp)
            if state is not None and routine is not None:
                state.queued = None
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("cancelled", irp, error)

    def freed(self, irp: Irp) -> None:
        """The IRP was freed: no longer tracked."""
        try:
            self._states.pop(irp, None)
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("freed", irp, error)

    def reused(self, irp: Irp) -> None:
        """The IRP was reinitialised for a new request: tracked afresh."""
        try:
            if irp in self._states:
                self._states[irp] = _IrpState()
        except BugCheck:
            raise
        except Exception as error:
            self._hook_failed("reused", irp, error)

    # -- results -------------------------------------------------------------------------------

    def outstanding(self) -> list[OutstandingIrp]:
        """Every watched IRP that a device still holds (not completed, not back with its creator),
        or whose completion the verifier still defers.

        :returns: the records, in the order the IRPs were first watched.
        """
        now = self._now()
        found = []
        for irp, state in self._states.items():
            index = irp._index
            deferred = state.deferral is not None and not state.deferral.resumed
            if not deferred and (index >= irp.stack_count or irp.completed):
                continue
            if index < irp.stack_count:
                loc = irp._stack[index]
                device, major = loc.device, loc.major
            else:
                device, major = None, 0
            found.append(
                OutstandingIrp(
                    irp,
                    device,
                    device.driver if device is not None else None,
                    index + 1,
                    major,
                    max(0.0, now - state.since),
                    deferred,
                )
            )
        return found

    def check(self) -> None:
        """Raise if anything went wrong: the end-of-run report (a fixture's teardown calls it).

        An IRP that no driver completed is reported even when nothing but the verifier still
        refers to it (a dispatch routine that marked it pending, or queued it, and then raised or
        was cancelled, and the queue that lost it): the verifier holds every IRP in flight for
        this.  IRPs that completed are not held, whatever their dispatch routines did.

        :raises VerificationFailed: listing every violation, every outstanding IRP (the device and
            driver holding it, for how long), every error of a completion the verifier deferred
            and every failure of its own (a ``clock=`` that raised, a hook that failed).
        """
        outstanding = self.outstanding()
        if self.violations or outstanding or self._errors:
            raise VerificationFailed(list(self.violations), outstanding, list(self._errors))

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by completions the verifier ran later (forced pending), and its own
        failures (:class:`~airp.MonitorHookError`: a ``clock=`` that raised, a hook that failed),
        oldest first.  A failure of the verifier's own never reaches the IRP: the first is also
        reported through :func:`sys.unraisablehook` (a warning under pytest)."""
        return list(self._errors)

    def statistics(self) -> VerifierStatistics:
        """A frozen snapshot of the counters.

        :returns: a :class:`VerifierStatistics`.
        """
        simulation = self.low_resources
        return VerifierStatistics(
            irps_watched=self._watched,
            checks_run=dict(self._checks_run),
            violations=dict(self._found),
            forced_pendings=self._forced,
            deferrals_armed=self._armed,
            outstanding=len(self.outstanding()),
            allocation_attempts=simulation.attempts if simulation is not None else 0,
            allocation_failures=simulation.failure_count if simulation is not None else 0,
            irps_tracked=len(self._states),
            fake_irps_sent=self._fakes_sent,
        )

    def __repr__(self) -> str:
        which = "all drivers" if self._names is None else f"{len(self._names) + len(self._objects)} driver(s)"
        return f"<Verifier {which}, force_pending={self.force_pending:g} seed={self.seed}: {len(self.violations)} violation(s)>"
