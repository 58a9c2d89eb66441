"""Remove locks: ``IO_REMOVE_LOCK`` for coroutines (reference 8.1).

A remove lock counts the work a device has in progress so that its removal can wait for that work
to finish.  Every dispatch routine acquires it for the request it handles (and for each callback,
timer or worker it leaves behind) and releases it when done; the removal path
(``IRP_MN_REMOVE_DEVICE``) acquires it once more, then calls :meth:`RemoveLock.release_and_wait`,
which refuses every later acquisition (STATUS_DELETE_PENDING) and returns once every holder has
released.  Only then may the driver detach and delete its device.

The count starts at 1, a bias the lock holds for itself; ``release_and_wait`` drops the caller's
acquisition and the bias, so the count reaches 0 exactly when the last holder lets go.

Misuse is what Driver Verifier reports as bug check 0xC4 (DRIVER_VERIFIER_DETECTED_VIOLATION), with
a :class:`RemoveLockViolation` as parameter 1.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Final

import anyio
import anyio.lowlevel

from .._machine._bugcheck import BugCheck, BugCheckCode
from .._machine._errors import NtStatusError
from .._machine._status import STATUS_DELETE_PENDING, STATUS_SUCCESS, NtStatus
from ._run_clock import add_deadlock_reporter, discard_deadlock_reporter
from ._virtual_time import DeadlockFindings
from ._waiter import Waiter, new_waiter

__all__ = ["RemoveLock", "RemoveLockHold", "RemoveLockStatistics", "RemoveLockViolation"]

#: Where airp's own parameter-1 codes for remove-lock misuse start: far from every value Microsoft's
#: "Bug Check 0xC4: DRIVER_VERIFIER_DETECTED_VIOLATION" page lists, so that they cannot be mistaken
#: for one of Windows' codes.
_AIRP_OWN: Final = 0xA1B0_0000


class RemoveLockViolation(enum.IntEnum):
    """Parameter 1 of bug check 0xC4 for remove-lock misuse.

    The first three are Windows' codes, from Microsoft's page "Bug Check 0xC4:
    DRIVER_VERIFIER_DETECTED_VIOLATION" (debugger/bug-check-0xc4--driver-verifier-detected-violation),
    where Driver Verifier's I/O verification reports them.  Windows checks the other three only with
    asserts of the checked build's remove lock, which have no bug check code: airp gives them codes
    of its own, from ``0xA1B00001`` up, a range that page does not use.
    """

    #: 0xD5: the tag given to ``IoReleaseRemoveLock`` does not match an acquisition still held
    #: (a tag never acquired, or already released).
    RELEASE_TAG_NOT_ACQUIRED = 0xD5
    #: 0xD6: the tag given to ``IoReleaseRemoveLockAndWait`` does not match an acquisition held.
    RELEASE_AND_WAIT_TAG_NOT_ACQUIRED = 0xD6
    #: 0xD7: a remove lock re-initialised after ``IoReleaseRemoveLockAndWait``.
    REINITIALIZED_AFTER_RELEASE_AND_WAIT = 0xD7
    #: airp's own: more releases than acquisitions, so the lock's own bias would be released (the
    #: checked build asserts that the lock was removed when the count reaches 0).
    BIAS_RELEASED = _AIRP_OWN + 1
    #: airp's own: ``release_and_wait`` called a second time on the same lock.
    RELEASE_AND_WAIT_TWICE = _AIRP_OWN + 2
    #: airp's own: more holders at once than the lock's high-water mark (the checked build's
    #: high-watermark assert).
    HIGH_WATER_MARK_EXCEEDED = _AIRP_OWN + 3


@dataclass(frozen=True, slots=True)
class RemoveLockStatistics:
    """A snapshot of a :class:`RemoveLock`, from :meth:`RemoveLock.statistics`.

    :ivar count: ``IoCount``: the holders plus the bias (1 for an idle lock; 0 once removed and
        released by everyone).
    :ivar removed: True once :meth:`RemoveLock.release_and_wait` has been called.
    :ivar holders: tag -> how many acquisitions with that tag are held (empty without tracking).
    :ivar high_water: the most holders the lock ever had at once, the bias not counted.
    :ivar acquired: how many acquisitions succeeded.
    :ivar refused: how many acquisitions were answered STATUS_DELETE_PENDING.
    """

    count: int
    removed: bool
    holders: Mapping[object, int]
    high_water: int
    acquired: int
    refused: int


class RemoveLock:
    """``IO_REMOVE_LOCK``: counts the work in progress so that a removal can wait for it.

    Construction is ``IoInitializeRemoveLock``.  :meth:`acquire` and :meth:`release` are plain
    synchronous calls that never suspend, cheap enough for every request; only
    :meth:`release_and_wait` waits.  A dispatch routine holds the lock around its request:

    .. code-block:: python

        async def read(self, device, irp):
            status = self.lock.acquire(irp)
            if status != STATUS_SUCCESS:
                complete_request(irp, status, 0)
                return status
            try:
                ...  # handle the request
            finally:
                self.lock.release(irp)

    or, when a refusal may surface as an exception (``NtStatusError(STATUS_DELETE_PENDING)``):

    .. code-block:: python

        with self.lock.hold(irp):  # or: async with self.lock.hold(irp):
            ...

    and the removal path waits for every holder:

    .. code-block:: python

        self.lock.acquire(irp)             # the REMOVE_DEVICE IRP's own acquisition
        status = await pass_down(device, irp)
        await self.lock.release_and_wait(irp)
        detach_device(lower); delete_device(device)

    With *tracking* (the checked build's remove lock, on by default) the lock keeps how many
    acquisitions each tag holds, and releasing a tag it does not hold is bug check 0xC4/0xD5.  Tags
    are compared as dictionary keys (an IRP is its own tag, by identity).  Without tracking the lock
    keeps only the count, and tags are ignored.

    :param name: a name for messages and ``repr`` (the device's, typically).
    :param tracking: keep the tags held (``holders``) and check every release against them.
    :param high_water_mark: the most holders allowed at once, the bias not counted; one more is bug
        check 0xC4 (:attr:`RemoveLockViolation.HIGH_WATER_MARK_EXCEEDED`).  ``None``: no limit.
    :raises TypeError: if *high_water_mark* is not an int, or *name* not a str or ``None``.
    :raises ValueError: if *high_water_mark* is negative.
    """

    __slots__ = (
        "__weakref__",
        "_acquired",
        "_ceiling",
        "_count",
        "_held",
        "_limit",
        "_name",
        "_peak",
        "_refused",
        "_removed",
        "_tracking",
        "_waiter",
    )

    def __init__(self, name: str | None = None, *, tracking: bool = True, high_water_mark: int | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"a remove lock's name is a str or None, got {type(name).__name__} {name!r}")
        if high_water_mark is not None:
            if not isinstance(high_water_mark, int) or isinstance(high_water_mark, bool):
                raise TypeError(f"high_water_mark is an int (the most holders at once) or None, got {high_water_mark!r}")
            if high_water_mark < 0:
                raise ValueError(f"high_water_mark is the most holders at once, 0 or more, got {high_water_mark}")
        self._name = name
        self._tracking = bool(tracking)
        self._limit = high_water_mark
        self._held: dict[object, int] = {}
        self._count = 1
        self._removed = False
        self._peak = 1
        # acquire's slow path is taken above this count: a new peak, or (-1) every time once removed.
        self._ceiling = 1
        self._acquired = 0
        self._refused = 0
        self._waiter: Waiter | None = None

    def initialize(self) -> None:
        """``IoInitializeRemoveLock`` again: reset the lock as if it had just been made.

        The count goes back to 1 (the bias), the tags held and the statistics are forgotten.  Only
        a lock that has not been released-and-waited may be re-initialised: once removal has begun,
        other tasks may still be calling :meth:`acquire` and counting on the refusal.

        :raises BugCheck: 0xC4/0xD7 if :meth:`release_and_wait` has been called on this lock.
        """
        if self._removed:
            raise self._bug_check(
                RemoveLockViolation.REINITIALIZED_AFTER_RELEASE_AND_WAIT,
                None,
                "a remove lock cannot be re-initialised after release_and_wait: other tasks may still call acquire on"
                " it and must keep getting STATUS_DELETE_PENDING; initialise a lock once, with its device (make a new"
                " RemoveLock for a new device)",
            )
        self._held = {}
        self._count = 1
        self._peak = self._ceiling = 1
        self._acquired = 0
        self._refused = 0
        self._waiter = None

    # -- the hot path ------------------------------------------------------------------------------

    def acquire(self, tag: object = None) -> NtStatus:
        """``IoAcquireRemoveLock``: count one more holder, unless the lock is being removed.

        Synchronous; never suspends.

        :param tag: what the acquisition is for (the IRP, typically); :meth:`release` must be given
            the same tag.  With tracking it must be hashable (a dictionary key).
        :returns: STATUS_SUCCESS: the caller holds the lock and must release it.
            STATUS_DELETE_PENDING once :meth:`release_and_wait` has been called: the caller holds
            nothing and must not proceed (a dispatch routine completes its IRP with that status).
        :raises BugCheck: 0xC4 (:attr:`RemoveLockViolation.HIGH_WATER_MARK_EXCEEDED`) if this
            acquisition would exceed the lock's high-water mark.
        """
        count = self._count + 1
        if count > self._ceiling:
            # A new high-water mark, or the lock is being removed: neither is on every request.
            return self._acquire_slowly(count, tag)
        self._count = count
        if self._tracking:
            # Tags are mostly new (an IRP is its own tag): a test and a store beat get().
            held = self._held
            if tag in held:
                held[tag] += 1
            else:
                held[tag] = 1
        self._acquired += 1
        return STATUS_SUCCESS

    def release(self, tag: object = None) -> None:
        """``IoReleaseRemoveLock``: one holder is done.

        If the lock is being removed and this was the last holder, :meth:`release_and_wait` returns.
        Synchronous; never suspends.

        :param tag: the tag given to :meth:`acquire`.
        :raises BugCheck: 0xC4/0xD5 (with tracking) if no acquisition with *tag* is held;
            0xC4 (:attr:`RemoveLockViolation.BIAS_RELEASED`) if the lock has more releases than
            acquisitions (only detectable without tracking: with it, 0xD5 comes first).
        """
        if self._tracking:
            held = self._held
            n = held.pop(tag, 0)  # one look-up for the usual case: the tag's only acquisition
            if n != 1:
                if not n:
                    raise self._not_held(RemoveLockViolation.RELEASE_TAG_NOT_ACQUIRED, "release", tag)
                held[tag] = n - 1
        count = self._count - 1
        if count <= 0:
            self._last_release(count, tag)
        self._count = count

    async def release_and_wait(self, tag: object = None) -> None:
        """``IoReleaseRemoveLockAndWait``: begin the removal, release, and wait for every holder.

        The caller holds one acquisition (with *tag*).  From now on every :meth:`acquire` answers
        STATUS_DELETE_PENDING.  The caller's acquisition and the lock's bias are released; if other
        holders remain, this waits until the last of them has released.  With no other holder it
        returns at once (after a checkpoint).

        On cancellation: the wait is not interruptible (it runs in a shielded cancel scope): a
        removal cannot be abandoned half-way, since the lock already refuses every new acquisition
        and the device must not be deleted while a holder still uses it.  It ends only when every
        holder has released; a cancellation that arrived meanwhile is delivered then, by a
        checkpoint right after the wait, with the removal complete.

        :param tag: the tag of the caller's acquisition.
        :raises BugCheck: 0xC4 (:attr:`RemoveLockViolation.RELEASE_AND_WAIT_TWICE`) if
            release_and_wait was already called on this lock; 0xC4/0xD6 (with tracking) if no
            acquisition with *tag* is held; 0xC4 (:attr:`RemoveLockViolation.BIAS_RELEASED`,
            without tracking) if the lock has no holder at all.
        """
        if self._removed:
            raise self._bug_check(
                RemoveLockViolation.RELEASE_AND_WAIT_TWICE,
                tag,
                "release_and_wait was already called on this remove lock: a device is removed once, and after the"
                " first call the lock holds neither its bias nor that caller's acquisition (release_and_wait once,"
                " in the REMOVE_DEVICE path)",
            )
        if self._tracking:
            held = self._held
            n = held.get(tag, 0)
            if not n:
                raise self._not_held(RemoveLockViolation.RELEASE_AND_WAIT_TAG_NOT_ACQUIRED, "release_and_wait", tag)
            if n == 1:
                del held[tag]
            else:
                held[tag] = n - 1
        elif self._count <= 1:
            self._last_release(self._count - 2, tag)
        self._removed = True
        self._ceiling = -1
        count = self._count = self._count - 2  # the caller's acquisition and the bias
        if count > 0:
            waiter = self._waiter = new_waiter()
            # While it waits, the lock is part of the run's deadlock report (with its holders).
            registered = add_deadlock_reporter(self)
            try:
                with anyio.CancelScope(shield=True):
                    await waiter.wait()
            finally:
                if registered:
                    discard_deadlock_reporter(self)
            await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            await anyio.lowlevel.checkpoint()

    def _report_deadlock(self, findings: DeadlockFindings) -> None:
        # Asked by the run's virtual clock if the run deadlocks while release_and_wait waits.
        findings.remove_locks.append((self, tuple(self._held) if self._tracking else ()))

    def hold(self, tag: object = None) -> RemoveLockHold:
        """Hold the lock for a block: ``with lock.hold(tag):`` or ``async with lock.hold(tag):``.

        Entering acquires the lock with *tag*; leaving releases it, on an exception as well.
        Entering a lock that is being removed raises ``NtStatusError(STATUS_DELETE_PENDING)`` and
        holds nothing.

        On cancellation: entering and leaving never suspend, in either form, so neither is a
        cancellation point.

        :param tag: the acquisition's tag (the IRP, typically).
        :returns: a context manager usable both ways; each entry is one acquisition.
        """
        return RemoveLockHold(self, tag)

    # -- looking at it -----------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The name given at construction."""
        return self._name

    @property
    def tracking(self) -> bool:
        """True if the lock keeps the tags held and checks releases against them."""
        return self._tracking

    @property
    def high_water_mark(self) -> int | None:
        """The most holders allowed at once (``None``: no limit)."""
        return self._limit

    @property
    def removed(self) -> bool:
        """``Removed``: True once :meth:`release_and_wait` has been called."""
        return self._removed

    @property
    def count(self) -> int:
        """``IoCount``: the holders plus the bias (1 when idle, 0 once removed and released by all)."""
        return self._count

    @property
    def holders(self) -> tuple[object, ...]:
        """The tags currently held, one entry per acquisition (empty without tracking)."""
        return tuple(tag for tag, n in self._held.items() for _ in range(n))

    def statistics(self) -> RemoveLockStatistics:
        """A snapshot of the lock: its count, state, tags held and totals.

        :returns: a :class:`RemoveLockStatistics`.
        """
        return RemoveLockStatistics(
            count=self._count,
            removed=self._removed,
            holders=MappingProxyType(dict(self._held)),
            high_water=self._peak - 1,
            acquired=self._acquired,
            refused=self._refused,
        )

    def __repr__(self) -> str:
        name = "" if self._name is None else f" {self._name!r}"
        return f"<RemoveLock{name} count={self._count} removed={self._removed}>"

    # -- the rare paths ----------------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return "remove lock" if self._name is None else f"remove lock {self._name!r}"

    def _acquire_slowly(self, count: int, tag: object) -> NtStatus:
        if self._removed:
            # Windows counts the refused acquisition in and out again, waking the remover if that
            # brought the count to 0; with no other thread in between the count is unchanged, and
            # a count already at 0 has woken the remover already.
            self._refused += 1
            return STATUS_DELETE_PENDING
        limit = self._limit
        if limit is not None and count - 1 > limit:
            raise self._bug_check(
                RemoveLockViolation.HIGH_WATER_MARK_EXCEEDED,
                tag,
                f"acquiring {tag!r} would make {count - 1} holders of the {self._label} at once, more than its"
                f" high-water mark of {limit}: the driver leaks acquisitions (a path that never releases) or"
                " the mark is too low",
            )
        self._peak = self._ceiling = count
        self._count = count
        if self._tracking:
            held = self._held
            held[tag] = held.get(tag, 0) + 1
        self._acquired += 1
        return STATUS_SUCCESS

    def _last_release(self, count: int, tag: object) -> None:
        """The count would reach *count* <= 0: the remover's wake-up, or one release too many."""
        if count == 0 and self._removed:
            waiter = self._waiter
            if waiter is not None:
                waiter.set()
            return
        raise self._bug_check(
            RemoveLockViolation.BIAS_RELEASED,
            tag,
            f"the {self._label} has been released more often than it was acquired"
            f" (releasing {tag!r} would bring its count to {count}"
            f"{'' if self._removed else ', releasing the bias the lock holds for itself'}): every release must"
            " match one successful acquire, and an acquire answered STATUS_DELETE_PENDING holds nothing",
        )

    def _not_held(self, code: RemoveLockViolation, call: str, tag: object) -> BugCheck:
        held = ", ".join(f"{t!r} x{n}" if n > 1 else repr(t) for t, n in self._held.items()) or "none"
        return self._bug_check(
            code,
            tag,
            f"{call} of the {self._label} with tag {tag!r}, which was never acquired or was already released"
            f" (tags held: {held}): give {call} the tag of an acquisition still held, the one given to acquire",
        )

    def _bug_check(self, code: RemoveLockViolation, tag: object, rule: str) -> BugCheck:
        return BugCheck(
            BugCheckCode.DRIVER_VERIFIER_DETECTED_VIOLATION,
            f"{rule} [{code.name}]",
            parameters=(int(code), self, tag, 0),
        )


class RemoveLockHold:
    """What :meth:`RemoveLock.hold` returns: holds the lock for a ``with`` or ``async with`` block.

    :ivar lock: the remove lock.
    :ivar tag: the tag each entry acquires with.
    """

    __slots__ = ("lock", "tag")

    def __init__(self, lock: RemoveLock, tag: object) -> None:
        self.lock = lock
        self.tag = tag

    def __repr__(self) -> str:
        return f"<RemoveLockHold {self.tag!r} of {self.lock!r}>"

    def __enter__(self) -> RemoveLock:
        lock = self.lock
        status = lock.acquire(self.tag)
        if status != STATUS_SUCCESS:
            raise NtStatusError(
                status, f"{lock._label} is being removed (release_and_wait was called): it accepts no new work"
            )
        return lock

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.lock.release(self.tag)

    async def __aenter__(self) -> RemoveLock:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.lock.release(self.tag)
