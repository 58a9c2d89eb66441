"""Virtual time, the part no backend owns: the clock interface, the deadlock error and its report.

airp runs on virtual time with an event loop of its own on asyncio (:mod:`._asyncio_clock`) and a
clock of its own under trio's run loop (:mod:`._trio_clock`).  Both move time only when every task
is blocked, straight to the next timer, and both end a run that nothing can wake with
:class:`VirtualTimeDeadlock`.  This module holds what they share; it names neither backend.

The deadlock report is assembled from the objects that know what is stuck, not guessed at by the
clock: an I/O manager (its outstanding requests), a device's task group (IRPs waiting in its
StartIo lanes and KMDF queues) and a remove lock in ``release_and_wait`` register themselves with
the run's clock (``airp._shell._run_clock.add_deadlock_reporter``).  The clock asks them only when the run has
deadlocked, so the hook costs nothing while the run goes on.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Literal, Protocol

__all__ = [
    "BackendName",
    "DeadlockFindings",
    "DeadlockReporter",
    "VirtualClock",
    "VirtualTimeDeadlock",
    "check_jump",
    "check_seconds",
]

BackendName = Literal["asyncio", "trio"]

#: How long (real seconds) an idle run waits for a worker thread still in flight before it looks
#: again; the thread's hand-back wakes it sooner.  Virtual time does not move while a thread is in
#: flight, so a thread about to hand back a result is never overtaken by a timer.
THREAD_POLL_SECONDS = 0.05


class VirtualClock(Protocol):
    """The interface both virtual clocks offer."""

    backend: BackendName

    def now(self) -> float:
        """Return the current virtual time in seconds."""
        ...

    @property
    def current_time(self) -> float:
        """The current virtual time in seconds (same as :meth:`now`)."""
        ...

    def jump(self, seconds: float) -> None:
        """Advance virtual time by *seconds* (>= 0) at once.

        Timers that fall due fire the next time the run looks at them; the caller keeps running
        until its next checkpoint.

        :raises ValueError: if *seconds* is negative or NaN.
        """
        ...

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """Return the ``(backend_name, backend_options)`` pair that runs anyio on this clock."""
        ...


class DeadlockFindings:
    """What the run's reporters found stuck, gathered when a run deadlocks.

    :ivar outstanding: ``(irp, holding_device)`` pairs: requests sent and not completed; the
        device is ``None`` for an IRP back with its creator.
    :ivar queued: ``(irp, where)`` pairs: IRPs waiting in a StartIo lane or a KMDF queue, or
        presented to a queue's handler and not finished, with a description of the queue.
    :ivar remove_locks: ``(lock, holder_tags)`` pairs: remove locks whose ``release_and_wait`` is
        waiting, with the tags of the acquisitions it waits for.
    :ivar waits: other waits that explain the deadlock, one sentence each (a device's removal
        waiting for its queues' routines to end).
    """

    __slots__ = ("outstanding", "queued", "remove_locks", "waits")

    def __init__(self) -> None:
        self.outstanding: list[tuple[Any, Any]] = []
        self.queued: list[tuple[Any, str]] = []
        self.remove_locks: list[tuple[Any, tuple[object, ...]]] = []
        self.waits: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.outstanding or self.queued or self.remove_locks or self.waits)


class DeadlockReporter(Protocol):
    """An object that can say what it holds when the run deadlocks."""

    def _report_deadlock(self, findings: DeadlockFindings) -> None: ...


class VirtualTimeDeadlock(RuntimeError):  # noqa: N818 (the name the documentation gives it)
    """The run is deadlocked on virtual time: every task is blocked and nothing can wake one.

    Raised by both virtual clocks (unless made with ``deadlock_error=False``) when no callback is
    ready, no timer is due at a finite time, no worker thread is in flight, no
    :func:`~airp.testing.wait_until_quiet` waits and no I/O other than the run's own wake-up channel
    is registered: a real event loop would sleep forever.  Tasks in ``anyio.sleep_forever()``,
    ``Event.wait()`` or a remove lock's ``release_and_wait`` count as blocked.

    The message lists what the run's I/O managers, device task groups and remove locks hold:
    requests outstanding with the device and driver holding each, IRPs waiting in StartIo lanes and
    KMDF queues, and remove locks being waited on with the tags of their holders.

    :ivar now: the virtual time at which the run deadlocked.
    :ivar outstanding: ``(irp, holding_device)`` pairs, oldest first per manager; the device is
        ``None`` for an IRP back with its creator.
    :ivar queued: ``(irp, where)`` pairs for IRPs waiting in device queues.
    :ivar remove_locks: ``(lock, holder_tags)`` pairs for remove locks being waited on.
    :ivar waits: other waits, one sentence each (a device removal waiting for its routines).
    """

    def __init__(self, now: float, findings: DeadlockFindings | list[tuple[Any, Any]] | None = None) -> None:
        if not isinstance(findings, DeadlockFindings):
            pairs = list(findings or [])
            findings = DeadlockFindings()
            findings.outstanding.extend(pairs)
        self.now = now
        self.findings = findings
        self.outstanding = findings.outstanding
        self.queued = findings.queued
        self.remove_locks = findings.remove_locks
        self.waits = findings.waits
        super().__init__(_describe(now, findings))


def _describe(now: float, findings: DeadlockFindings) -> str:
    lines = [
        f"deadlock on virtual time at t={now!r}: every task is blocked, and no timer, I/O or worker "
        "thread can wake any of them (a real event loop would hang here)"
    ]
    if findings.outstanding:
        lines.append(f"{len(findings.outstanding)} request(s) still outstanding:")
        for irp, device in findings.outstanding:
            if device is not None:
                lines.append(f"  {irp!r} held by {device!r} (driver {getattr(device, 'driver', None)!r})")
            else:
                lines.append(f"  {irp!r} with its creator")
    if findings.queued:
        lines.append(f"{len(findings.queued)} IRP(s) in device queues:")
        lines.extend(f"  {irp!r} in {where}" for irp, where in findings.queued)
    if findings.remove_locks:
        lines.append(f"{len(findings.remove_locks)} remove lock(s) waited on by release_and_wait:")
        for lock, tags in findings.remove_locks:
            held = ", ".join(repr(tag) for tag in tags) if tags else "holders not tracked"
            lines.append(f"  {lock!r}, still held by: {held}")
    if findings.waits:
        lines.append("waiting:")
        lines.extend(f"  {wait}" for wait in findings.waits)
    if not findings:
        lines.append(
            "no request is outstanding in the run's I/O managers, no IRP waits in a device queue and no remove"
            " lock is waited on: look for a task waiting on an Event, a lock or sleep_forever() that nothing will"
            " release"
        )
    return "\n".join(lines)


class DeadlockReporters:
    """The reporters registered with one run's clock, weakly held."""

    __slots__ = ("_reporters",)

    def __init__(self) -> None:
        self._reporters: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, reporter: DeadlockReporter) -> None:
        self._reporters.add(reporter)

    def discard(self, reporter: DeadlockReporter) -> None:
        self._reporters.discard(reporter)

    def gather(self) -> DeadlockFindings:
        findings = DeadlockFindings()
        # Oldest registration first would be nicer, but a WeakSet has no order; sort by kind so that
        # the report reads the same way every time.
        for reporter in sorted(self._reporters, key=lambda r: type(r).__name__):
            try:
                reporter._report_deadlock(findings)
            except Exception as error:  # a report must never hide the deadlock itself
                findings.queued.append((reporter, f"(its report failed: {error!r})"))
        return findings


def check_jump(seconds: float) -> float:
    """*seconds* as a float, checked to be a forward jump."""
    seconds = float(seconds)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"time can only jump forwards, by a number of seconds >= 0, not {seconds!r}")
    return seconds


def check_seconds(seconds: object, what: str = "seconds") -> float:
    """*seconds* as a float >= 0 (``math.inf`` allowed), or a clear error naming *what*."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {type(seconds).__name__} {seconds!r}")
    value = float(seconds)
    if not value >= 0:  # NaN too
        raise ValueError(f"{what} must be >= 0 (math.inf for ever), got {seconds!r}")
    return value
