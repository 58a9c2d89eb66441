"""BugCheck: misuse of the IRP rules, reported with the code Windows would stop with."""

from __future__ import annotations

import contextlib
import enum
from typing import Any

__all__ = ["BugCheck", "BugCheckCode", "VerifierCode"]


class BugCheckCode(enum.IntEnum):
    """The bug check codes airp raises (reference 10.3)."""

    INCONSISTENT_IRP = 0x2A
    NO_MORE_IRP_STACK_LOCATIONS = 0x35
    MULTIPLE_IRP_COMPLETE_REQUESTS = 0x44
    CANCEL_STATE_IN_COMPLETED_IRP = 0x48
    DRIVER_RETURNED_HOLDING_CANCEL_LOCK = 0x11B
    DRIVER_VERIFIER_DETECTED_VIOLATION = 0xC4
    DRIVER_VERIFIER_IOMANAGER_VIOLATION = 0xC9
    DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL = 0xD5


class VerifierCode(enum.IntEnum):
    """Parameter 1 of bug check 0xC9 for the violations airp detects (reference 10.2, 10.3)."""

    FREE_NON_IRP = 0x01
    FREE_IRP_ON_THREAD = 0x02
    CALL_DRIVER_NON_IRP = 0x03
    CALL_DRIVER_INVALID_DEVICE = 0x04
    COMPLETE_WITH_PENDING_STATUS = 0x06
    COMPLETE_WITH_CANCEL_ROUTINE = 0x07
    DELETE_ATTACHED_DEVICE = 0x201
    DETACH_UNATTACHED_DEVICE = 0x202
    CALL_DRIVER_WITH_CANCEL_ROUTINE = 0x203
    NULL_DEVICE_OBJECT = 0x204
    FORWARD_QUEUED_IRP = 0x205
    STACK_LOCATIONS_RUNNING_OUT = 0x208
    COMPLETE_QUEUED_IRP = 0x209
    FREE_IRP_IN_USE = 0x20A
    PNP_IRP_NOT_INITIALIZED = 0x20E
    POWER_IRP_NOT_INITIALIZED = 0x20F
    WMI_IRP_NOT_INITIALIZED = 0x210
    STATUS_CHANGED_NOT_UNDERSTOOD = 0x213
    INFORMATION_CHANGED_NOT_UNDERSTOOD = 0x214
    FAILED_PNP_PASSED_DOWN = 0x215
    STATUS_OVERWRITTEN_NOT_SUPPORTED = 0x216
    FAILED_POWER_PASSED_DOWN = 0x219
    SUSPICIOUS_STATUS = 0x21B
    COPIED_WITHOUT_ROUTINE = 0x21C
    REMOVE_WITHOUT_DETACH = 0x21D
    REMOVE_WITHOUT_DELETE = 0x21E
    DISPATCH_STATUS_MISMATCH = 0x224
    DISPATCH_RETURNED_WITHOUT_PENDING = 0x226
    PENDING_NOT_PROPAGATED = 0x228
    COMPLETE_NEVER_SENT = 0x239
    COMPLETED_NOT_UNDERSTOOD = 0x23B
    PENDING_NOT_MARKED = 0x23D
    MARKED_PENDING_NOT_RETURNED = 0x23E
    DELETE_DEVICE_TWICE = 0x240
    DETACH_DURING_SURPRISE_REMOVAL = 0x241
    DELETE_DURING_SURPRISE_REMOVAL = 0x242
    DEVICE_INITIALIZING_NOT_CLEARED = 0x243
    REMOVE_DEVICE_FAILED = 0x306
    WAIT_ON_SIGNALLED_EVENT = 0x307
    REINITIALIZE_IRP_IN_USE = 0x310
    REUSE_NOT_ALLOCATED_IRP = 0x311
    INFORMATION_TOO_LARGE = 0x312


class BugCheck(Exception):  # noqa: N818 - the Windows name is the point
    """A rule of the IRP model was broken: what Windows would stop the machine for.

    airp raises it at the offending call, with the real bug check code and its four parameters,
    so that a driver bug shows up as a precise error instead of a hang.

    :ivar code: the bug check code (``0x44`` for a double completion, ...).
    :ivar parameters: the four bug check parameters, as Windows defines them for *code*.
    :ivar verifier_code: for the two Driver Verifier bug checks, 0xC9 and 0xC4, the violation
        they report, which Windows puts in parameter 1: a :class:`VerifierCode` for 0xC9 when
        airp knows the code (a plain int otherwise, and always for 0xC4, whose codes are another
        family).  ``None`` for every other bug check, whose parameter 1 is something else (the
        IRP, for 0x44 and 0x35), so callers never need to know which slot means what.
    :ivar rule: a sentence naming the rule that was broken.
    :ivar irp: the IRP involved, if any.
    :ivar device: the device involved, if any.
    :ivar driver: the driver involved, if any.
    :ivar follow_on: what went wrong *after* this bug check while airp cleaned up after it (a
        driver-allocated IRP that airp completed with STATUS_INTERNAL_ERROR for a raising dispatch
        routine reached its final stage: 0x2A, say), or ``None``.  The first bug check is the one
        the caller sees; a follow-on never takes its place, it is kept here (its own
        ``__context__`` is this bug check) and named in this one's notes.  A later follow-on
        hangs off the previous one's ``follow_on``.
    """

    #: Set by :func:`chain_follow_on`; a class default, so that a bug check costs nothing more.
    follow_on: BaseException | None = None

    def __init__(
        self,
        code: int,
        rule: str,
        *,
        parameters: tuple[Any, Any, Any, Any] = (0, 0, 0, 0),
        irp: object = None,
        device: object = None,
        driver: object = None,
    ) -> None:
        self.code = code
        self.parameters = parameters
        self.rule = rule
        self.irp = irp
        self.device = device
        self.driver = driver
        self.verifier_code: VerifierCode | int | None = _verifier_code(code, parameters)
        try:
            name = BugCheckCode(code).name
        except ValueError:
            name = "BUG_CHECK"
        where = [f"{label} {value!r}" for label, value in (("irp", irp), ("device", device), ("driver", driver)) if value is not None]
        params = ", ".join(hex(p) if isinstance(p, int) else repr(p) for p in parameters)
        sub = self.verifier_code
        if sub is not None:
            name += f" / {sub.name} {int(sub):#x}" if isinstance(sub, VerifierCode) else f" / {sub:#x}"
        message = f"bug check {code:#x} {name} ({params}): {rule}"
        if where:
            message += " [" + "; ".join(where) + "]"
        super().__init__(message)


_VERIFIER_BUG_CHECKS = frozenset((BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION, BugCheckCode.DRIVER_VERIFIER_DETECTED_VIOLATION))


def _verifier_code(code: int, parameters: tuple[Any, Any, Any, Any]) -> VerifierCode | int | None:
    """Parameter 1 of a Driver Verifier bug check (0xC9, 0xC4), typed; ``None`` for the others."""
    if code not in _VERIFIER_BUG_CHECKS:
        return None
    first = parameters[0]
    if not isinstance(first, int) or isinstance(first, bool):
        return None
    if code == BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION:
        try:
            return VerifierCode(first)
        except ValueError:
            return int(first)
    return int(first)


def chain_follow_on(first: BaseException, follow_on: BaseException) -> None:
    """Keep *follow_on*, raised while airp cleaned up after *first*, with *first*, which wins.

    airp finishes what a failing routine leaves behind: a dispatch, completion or cancel routine
    that raises has its IRP completed with STATUS_INTERNAL_ERROR (or STATUS_CANCELLED), and that
    completion may break a rule in turn (a driver-allocated IRP whose creator had no routine
    returning STATUS_MORE_PROCESSING_REQUIRED reaches its final stage: 0x2A).  The caller must see
    the first error, the one that says what the driver did; the follow-on is kept with it:

    - as ``first.follow_on`` (after the last follow-on already kept there), on a :class:`BugCheck`
      and on any other exception that has no attribute of that name of its own;
    - as a note on *first* (Python 3.11 and later), so that a traceback shows it;
    - *follow_on*'s own ``__context__`` is *first* when it was raised while *first* was handled,
      as airp's clean-up does; it is not changed here.

    :param first: the error the caller sees.
    :param follow_on: what airp's clean-up after it raised.
    """
    last: BaseException = first
    seen = {id(first)}
    while True:
        later = getattr(last, "follow_on", None)
        if not isinstance(later, BaseException) or id(later) in seen:
            break
        seen.add(id(later))
        last = later
    if getattr(last, "follow_on", None) is None:
        # (Something else under that name is an attribute of the exception's own: left alone.)
        # An exception class with __slots__ refuses it: the note still says it.
        with contextlib.suppress(AttributeError, TypeError):
            last.follow_on = follow_on  # type: ignore[attr-defined]
    add_note = getattr(first, "add_note", None)
    if add_note is not None:
        try:
            name = type(follow_on).__name__
            add_note(f"airp: then, while completing the IRP left behind, {name} followed (kept as .follow_on): {follow_on}")
        except Exception:
            pass  # a note is a courtesy: never let it replace the error
