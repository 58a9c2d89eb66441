"""Associated IRPs: one master request carried out as several smaller ones (reference 2.5, 5.5).

A highest-level driver (a file system, a filter splitting a large read) makes *associated* IRPs for
a *master* IRP it received, sends them down, and pends the master.  The I/O manager does the rest:

- each associated IRP completes normally (its creator's completion routine, if any, returns
  STATUS_CONTINUE_COMPLETION), and the I/O manager frees it;
- the master's ``associated_irp_count`` goes down by one each time, and when it reaches zero the
  I/O manager completes the master, with the status *its driver* stored in it: statuses are not
  aggregated, so a driver that wants a failed part to fail the whole request sets the master's
  status from the part's completion routine;
- cancelling the master cancels nothing by itself; the master's cancel routine must cancel the
  associated IRPs (:func:`cancel_associated_irps`; :func:`arm_master_cancel` arms it).

The count must be set before the first associated IRP is sent, or the first one to complete would
complete the master (:func:`make_associated_irps` sets it; with :func:`make_associated_irp` the
driver adds to ``master.associated_irp_count`` itself, as in Windows).

Departure: Windows stores the master pointer and the count in one union (``AssociatedIrp``), so a
master cannot use ``SystemBuffer`` and an associated IRP cannot itself be a master.  airp keeps
separate fields, but refuses an associated IRP as a master all the same.
"""

from __future__ import annotations

from ._allocation import (
    _MASTER,
    _OUTSTANDING,
    IrpAllocator,
    _allocate,
    _forget,
    _freed_by_io_manager,
    _Origin,
    free_irp,
)
from ._bugcheck import BugCheck, BugCheckCode
from ._cancel import cancel_irp
from ._codes import IrpFlags
from ._device import DeviceObject
from ._irp import CompletionRoutine, Irp, IrpStateError
from ._misuse import missing_await, wrong_type

__all__ = [
    "MAX_ASSOCIATED_IRPS",
    "arm_master_cancel",
    "associated_irps",
    "cancel_associated_irps",
    "cancel_with",
    "make_associated_irp",
    "make_associated_irps",
]

#: The most associated IRPs one :func:`make_associated_irps` call makes.  Windows bounds the count
#: only by a LONG and by pool memory; here each IRP is a Python object of 0.5 to 2 KB (1 to 127
#: stack locations), so a count from a bad computation (``2**70``) would allocate until the
#: process is killed.  65,536 parts is 32 to 130 MB, and more than a file system splits one
#: request into (a 4 GiB transfer, a DWORD's worth, in 64 KiB parts).  A driver that needs more
#: calls :func:`make_associated_irp` in its own loop and adds to ``associated_irp_count`` itself.
MAX_ASSOCIATED_IRPS = 65_536


def _check_master(master: object) -> Irp:
    if not isinstance(master, Irp):
        raise TypeError(f"a master must be an Irp, got {type(master).__name__} {master!r}{missing_await(master)}")
    if master.master_irp is not None or master.flags & IrpFlags.ASSOCIATED_IRP:
        raise ValueError(
            f"{master!r} is itself an associated IRP and cannot be a master: in Windows the same field"
            " holds an associated IRP's master and a master's count"
        )
    if master.completed:
        raise IrpStateError(f"cannot make associated IRPs for {master!r}: it has already completed")
    return master


def _outstanding(master: Irp) -> dict[Irp, None]:
    d = master.__dict__
    outstanding: dict[Irp, None] | None = d.get(_OUTSTANDING)
    if outstanding is None:
        outstanding = d[_OUTSTANDING] = {}
    return outstanding


def make_associated_irp(master: Irp, stack_size: int, *, allocator: IrpAllocator | None = None) -> Irp | None:
    """``IoMakeAssociatedIrp``: a new IRP that carries out part of *master*.

    The IRP has ``IrpFlags.ASSOCIATED_IRP`` set, ``master_irp`` pointing at *master*, and the
    master's requester as its ``owner`` (it is on no requester's list, reference 2.9).  Fill its
    next location and send it like any IRP; it completes normally and the I/O manager frees it.
    Before sending the first one, add the number of associated IRPs to
    ``master.associated_irp_count`` (or use :func:`make_associated_irps`, which does).

    :param stack_size: number of stack locations: at least the target device's ``stack_size``.
    :param allocator: the :class:`~airp.IrpAllocator` to allocate through (lookaside, statistics,
        low-resources simulation); ``None`` for a plain allocation.
    :returns: the associated IRP, or ``None`` if the allocation failed.
    :raises ValueError: if *master* is itself an associated IRP, or *stack_size* is out of range.
    :raises IrpStateError: if *master* has already completed.
    :raises TypeError: if *master* is not an IRP.
    """
    _check_master(master)
    irp = _allocate(stack_size, False, allocator, _Origin.ASSOCIATED, "make_associated_irp")
    if irp is None:
        return None
    irp.__dict__[_MASTER] = master
    irp.flags |= IrpFlags.ASSOCIATED_IRP
    irp.master_irp = master
    owner = master.owner
    if owner is not None:
        irp.owner = owner
    irp._final_stage = _associated_final_stage
    _outstanding(master)[irp] = None
    return irp


def make_associated_irps(master: Irp, count: int, stack_size: int, *, allocator: IrpAllocator | None = None) -> list[Irp] | None:
    """Make *count* associated IRPs for *master* and add *count* to its ``associated_irp_count``.

    All or nothing: if one allocation fails, those already made are freed, the count is left
    alone, and the result is ``None``; the driver then fails the master with
    STATUS_INSUFFICIENT_RESOURCES.

    :param count: how many associated IRPs, 1 to :data:`MAX_ASSOCIATED_IRPS` (65,536).
    :returns: the associated IRPs, or ``None`` if an allocation failed.
    :raises TypeError: if *count* is not an int (and as :func:`make_associated_irp`).
    :raises ValueError: if *count* is below 1 or above :data:`MAX_ASSOCIATED_IRPS` (checked before
        anything is allocated), and as :func:`make_associated_irp`.
    """
    if type(count) is not int:
        raise TypeError(f"make_associated_irps: count must be an int (how many parts), got {type(count).__name__} {count!r}")
    if not 1 <= count <= MAX_ASSOCIATED_IRPS:
        raise ValueError(
            f"make_associated_irps: count must be a positive int up to {MAX_ASSOCIATED_IRPS} (how many parts), got {count}:"
            " split the request into fewer, larger parts, or make them with make_associated_irp in a loop"
        )
    _check_master(master)
    made: list[Irp] = []
    for _ in range(count):
        irp = make_associated_irp(master, stack_size, allocator=allocator)
        if irp is None:
            for part in made:
                free_irp(part)
            return None
        made.append(irp)
    master.associated_irp_count += count
    return made


def associated_irps(master: Irp) -> list[Irp]:
    """The associated IRPs of *master* that have been made and have not completed (nor been freed).

    :raises TypeError: if *master* is not an IRP.
    """
    if not isinstance(master, Irp):
        raise wrong_type("associated_irps(master)", "the master Irp", master)
    outstanding: dict[Irp, None] | None = master.__dict__.get(_OUTSTANDING)
    return list(outstanding) if outstanding else []


def cancel_associated_irps(device: DeviceObject | None, master: Irp) -> None:
    """A master's cancel routine: cancel every associated IRP that has not completed (reference 2.5).

    Arm it with :func:`arm_master_cancel` (or ``master.set_cancel_routine(cancel_associated_irps)``).
    It does not complete the master: the master completes when its last associated IRP does, with
    the status its driver set (a completion routine of the parts typically stores
    STATUS_CANCELLED there).  When the last associated IRP completes, airp takes this routine off
    the master before completing it, so the driver need not disarm it.

    :raises TypeError: if *master* is not an IRP or *device* not a DeviceObject or ``None`` (the
        arguments :func:`~airp.cancel_irp` gives a cancel routine).
    """
    if device is not None and not isinstance(device, DeviceObject):
        raise wrong_type("cancel_associated_irps(device, master): device", "a DeviceObject or None", device)
    if not isinstance(master, Irp):
        raise wrong_type("cancel_associated_irps(device, master): master", "the master Irp", master)
    for irp in associated_irps(master):
        if not irp.completed:
            cancel_irp(irp)


def arm_master_cancel(master: Irp) -> None:
    """Make cancelling *master* cancel its associated IRPs, with the arm-then-recheck rule (6.3).

    Sets :func:`cancel_associated_irps` as the master's cancel routine.  If the master was cancelled
    before the routine was armed, the routine is taken back at once and run here.  Call it once the
    associated IRPs are made (and the master marked pending), before or while sending them.

    :raises IrpStateError: if *master* has no outstanding associated IRPs (nothing would ever take
        the routine off again, and completing the master would raise bug check 0xC9 / 0x07), or it
        already has a cancel routine.
    """
    if not isinstance(master, Irp):
        raise wrong_type("arm_master_cancel", "the master Irp", master)
    if not associated_irps(master):
        raise IrpStateError(f"arm_master_cancel on {master!r}, which has no outstanding associated IRPs: make them first")
    if master.cancel_routine is not None:
        raise IrpStateError(f"{master!r} already has cancel routine {master.cancel_routine!r}")
    master.set_cancel_routine(cancel_associated_irps)
    if master.cancel and master.set_cancel_routine(None) is not None:
        index = master._index
        cancel_associated_irps(master._stack[index].device if index < master.stack_count else None, master)


# -- any child IRP: a driver's own IRP sent down for a request it pended -------------------------

#: Where a parent keeps the children whose cancel it drives (cancel_with), in its __dict__.
_CHILDREN = "_airp_cancel_children"


def _cancel_children(device: DeviceObject | None, parent: Irp) -> None:
    """The parent's cancel routine armed by :func:`cancel_with`: cancel every tied child."""
    children: dict[Irp, None] | None = parent.__dict__.get(_CHILDREN)
    for child in list(children or ()):
        if not child.completed:
            cancel_irp(child)


class _ReleaseThenCall:
    """The child's completion routine as :func:`cancel_with` leaves it: untie, then the driver's."""

    __slots__ = ("parent", "routine")

    def __init__(self, parent: Irp, routine: CompletionRoutine) -> None:
        self.parent = parent
        self.routine = routine

    def __call__(self, device: DeviceObject | None, irp: Irp, context: object) -> int:
        _untie(self.parent, irp)
        return self.routine(device, irp, context)

    def __repr__(self) -> str:
        return f"{self.routine!r} (after untying from {self.parent!r})"


def _untie(parent: Irp, child: Irp) -> None:
    # The child is back: it no longer needs cancelling with the parent.  With the last child gone
    # the parent's cancel routine is disarmed (unless cancel_irp has already claimed it), so that
    # the driver may complete the parent from the child's routine without bug check 0xC9 / 0x07.
    children: dict[Irp, None] | None = parent.__dict__.get(_CHILDREN)
    if children is None:
        return
    children.pop(child, None)
    if not children and parent.cancel_routine is _cancel_children:
        parent.set_cancel_routine(None)


def cancel_with(parent: Irp, child: Irp) -> None:
    """Tie *child* to *parent*: cancelling *parent* cancels *child*, until *child* completes.

    For a driver that pends a request from above (the *parent*) and sends an IRP of its own for
    it (the *child*: :func:`~airp.allocate_irp`, an :class:`~airp.IrpPool`'s, any IRP).  It does
    by itself what such a driver otherwise writes by hand (reference 6.3, 6.4; seed 002):

    - the parent→children map (a parent may have several children: call it once per child);
    - the parent's cancel routine, which cancels every child that has not completed;
    - arm-then-recheck: if the parent was cancelled before the routine was armed, the routine is
      taken back at once and the children are cancelled here (a child not yet sent keeps its
      ``cancel`` flag, which the lower driver sees when it arms its own cancel routine);
    - the disarm: when a child completes, it is untied *before* the completion routine the driver
      set on it runs, and with the last child the parent's cancel routine is taken off, so that
      routine may complete the parent at once.

    Call it after ``child.set_completion_routine(...)`` (the routine it wraps) and after marking
    the parent pending, before sending the child::

        own.set_completion_routine(transfer_done, (irp, transfer))
        irp.mark_pending()
        airp.cancel_with(irp, own)
        await airp.send_irp(lower, own)
        return airp.STATUS_PENDING

    Cancelling the parent completes nothing by itself: the child comes back (as cancelled, from
    a lower driver that honours cancellation) and its completion routine completes the parent,
    as it always does.  For associated IRPs use :func:`arm_master_cancel`, which the I/O manager
    disarms when it completes the master.

    :raises TypeError: if *parent* or *child* is not an IRP (a coroutine names the missing ``await``).
    :raises IrpStateError: if *parent* has completed or has a cancel routine of its own, if *child*
        has completed, or has no completion routine set at its next location (set it first: this
        function wraps it, and the driver's own IRP needs one anyway, reference 5.8).
    :raises ValueError: if *child* is *parent*.
    """
    if not isinstance(parent, Irp):
        raise wrong_type("cancel_with", "the parent Irp", parent)
    if not isinstance(child, Irp):
        raise wrong_type("cancel_with", "the child Irp", child)
    if child is parent:
        raise ValueError(f"cancel_with({parent!r}, itself): the child is the IRP the driver sends down")
    if parent.completed:
        raise IrpStateError(f"cancel_with: the parent {parent!r} has already completed")
    if child.completed:
        raise IrpStateError(f"cancel_with: the child {child!r} has already completed")
    routine = parent.cancel_routine
    if routine is not None and routine is not _cancel_children:
        raise IrpStateError(f"cancel_with: the parent {parent!r} already has cancel routine {routine!r}")
    index = child._index - 1
    loc = child._stack[index] if 0 <= index < child.stack_count else None
    if loc is None or loc.completion_routine is None:
        raise IrpStateError(
            f"cancel_with: set the child's completion routine first ({child!r} has none at its next location):"
            " cancel_with unties the child just before that routine runs"
        )
    if not isinstance(loc.completion_routine, _ReleaseThenCall):
        loc.completion_routine = _ReleaseThenCall(parent, loc.completion_routine)
    children: dict[Irp, None] | None = parent.__dict__.get(_CHILDREN)
    if children is None:
        children = parent.__dict__[_CHILDREN] = {}
    children[child] = None
    if routine is None:
        parent.set_cancel_routine(_cancel_children)
    # Arm, then recheck (reference 6.3): a cancel that came first found no routine to call.
    if parent.cancel and parent.set_cancel_routine(None) is not None:
        pindex = parent._index
        _cancel_children(parent._stack[pindex].device if pindex < parent.stack_count else None, parent)


def _associated_final_stage(irp: Irp) -> None:
    """Reference 5.5 steps 1-3, called by the completion walk for each associated IRP.

    The count has just been decremented; the I/O manager completes the master right after this if
    it reached zero.
    """
    master: Irp | None = irp.__dict__.get(_MASTER)
    if master is None:  # pragma: no cover - reinitialised behind airp's back
        return
    _forget(irp)
    _freed_by_io_manager(irp)
    count = master.associated_irp_count
    if count < 0:
        raise BugCheck(
            BugCheckCode.INCONSISTENT_IRP,
            f"an associated IRP of {master!r} completed while the master's associated_irp_count was 0: set the"
            " count to the number of associated IRPs before sending the first one (reference 2.5), or use"
            " make_associated_irps",
            parameters=(master, count, 0, 0),
            irp=master,
        )
    if count == 0 and master.cancel_routine is cancel_associated_irps:
        master.cancel_routine = None
