"""Cancel-safe IRP queues and the "arm then re-check" rule (reference 6.3, 6.4).

Part of the sans-I/O machine: plain synchronous functions, no event loop.  Everything here runs on
the event loop's single thread without awaiting, so each operation is atomic with respect to
:func:`~airp.cancel_irp`: there is no cancel spin lock and no queue lock to take.  The algorithms
are still the Windows ones step for step (``IoCsqInsertIrp``, ``IoCsqRemoveNextIrp``,
``IoCsqRemoveIrp``, the internal cancel routine), including the branches for a cancel routine that
has been taken but has not yet run, so that a queue built on the hook methods stays correct when a
cancel routine is taken by someone else between two queue operations.

A storage callback that raises never loses an IRP.  Once an IRP has left the queue on its way to
someone (the canceller, the caller of a remove, an insert that found it cancelled) and the
callback raised before that someone got it, the queue completes it with STATUS_INTERNAL_ERROR
(keeping the exception as :attr:`~airp.Irp.routine_error`) unless the callback had completed it
already, and then the exception propagates to the caller of the queue operation or of
:func:`~airp.cancel_irp`.  See :meth:`CancelSafeQueue.complete_canceled_irp` for why the status is
not STATUS_CANCELLED.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ._cancel import cancel_irp
from ._completion import complete_after_error, complete_request
from ._irp import CancelRoutine, Irp, IrpStateError, _not_plain_function
from ._misuse import must_be
from ._status import STATUS_CANCELLED, STATUS_INTERNAL_ERROR, STATUS_PENDING, STATUS_SUCCESS, NtStatus, nt_success

__all__ = [
    "CancelSafeQueue",
    "CsqIrpContext",
    "IrpQueue",
    "mark_cancelable",
    "mark_irp_cancelable",
    "unmark_cancelable",
    "unmark_irp_cancelable",
]


# -- the arm-then-re-check rule (6.3), for drivers writing their own cancel routines -------------


def mark_irp_cancelable(irp: Irp, routine: CancelRoutine) -> NtStatus:
    """Arm *routine* as the cancel routine of *irp*, then re-check the cancel flag (reference 6.3).

    Call it *after* putting the IRP where *routine* will look for it.  It is
    ``WdfRequestMarkCancelableEx`` for a bare IRP (``IoSetCancelRoutine`` followed by the
    ``Irp->Cancel`` re-check), and answers as :meth:`airp.Request.mark_cancelable` does::

        if airp.mark_irp_cancelable(irp, on_cancel) == STATUS_CANCELLED:
            ...  # already cancelled: take it back out and complete it with STATUS_CANCELLED

    :param irp: an IRP the caller holds, not yet cancelable.
    :param routine: a plain function ``(device, irp) -> None``.
    :returns: STATUS_SUCCESS if the IRP is now cancelable (*routine* will run if it is cancelled).
        STATUS_CANCELLED if the IRP had already been cancelled: the routine is not armed and will
        not run, and the caller must take the IRP back out and complete it with STATUS_CANCELLED.
    :raises TypeError: if *irp* is not an IRP, or *routine* is not a plain function: ``None``
        included (an IRP "cancelable" with no routine would, once cancelled, leave
        :func:`unmark_irp_cancelable` answering STATUS_CANCELLED with nobody to complete it),
        something not callable, a coroutine function or a generator function.
    :raises IrpStateError: if the IRP already has a cancel routine or has completed (misuse raises
        here, where :meth:`airp.Request.mark_cancelable` returns STATUS_INVALID_DEVICE_REQUEST as
        KMDF does).
    """
    if not isinstance(irp, Irp):
        raise TypeError(f"mark_irp_cancelable(irp, routine): irp must be an Irp, got {type(irp).__name__} {irp!r}")
    problem = _not_plain_function(routine)
    if problem is not None:
        raise TypeError(
            f"mark_irp_cancelable(irp, routine): routine must be a plain function (device, irp) -> None that"
            f" completes the IRP when it is cancelled; {problem} (to disarm, call unmark_irp_cancelable)"
        )
    if irp.completed:
        raise IrpStateError(f"cannot make {irp!r} cancelable: it has completed")
    if irp.cancel_routine is not None:
        raise IrpStateError(f"{irp!r} already has cancel routine {irp.cancel_routine!r}; disarm it first")
    irp.set_cancel_routine(routine)
    # Cancelled before we armed and we win the routine back: the IRP is ours to complete.
    # Otherwise it is not cancelled, or the routine was taken and will run and complete it.
    if irp.cancel and irp.set_cancel_routine(None) is not None:
        return STATUS_CANCELLED
    return STATUS_SUCCESS


def unmark_irp_cancelable(irp: Irp) -> NtStatus:
    """Disarm the cancel routine of *irp* before completing it or handing it on (reference 6.3).

    ``WdfRequestUnmarkCancelable`` for a bare IRP (``IoSetCancelRoutine(Irp, NULL)``); answers as
    :meth:`airp.Request.unmark_cancelable` does.

    :returns: STATUS_SUCCESS if the routine was disarmed: the caller owns the IRP and may complete
        it.  STATUS_CANCELLED if the routine has already been taken by :func:`~airp.cancel_irp` (or
        none was armed): it owns the IRP and will complete it; the caller must not touch it again.
    :raises TypeError: if *irp* is not an IRP.
    """
    if type(irp) is not Irp and not isinstance(irp, Irp):
        raise must_be("unmark_irp_cancelable(irp): irp", "an Irp", irp)
    return STATUS_SUCCESS if irp.set_cancel_routine(None) is not None else STATUS_CANCELLED


def mark_cancelable(irp: Irp, routine: CancelRoutine) -> bool:
    """Deprecated: use :func:`mark_irp_cancelable`, which answers with a status as
    :meth:`airp.Request.mark_cancelable` does.

    :returns: True where :func:`mark_irp_cancelable` returns STATUS_SUCCESS, False where it returns
        STATUS_CANCELLED.
    :raises TypeError, IrpStateError: as :func:`mark_irp_cancelable`.
    """
    _deprecated("airp.mark_cancelable(irp, routine) -> bool", "airp.mark_irp_cancelable(irp, routine) -> NtStatus")
    return mark_irp_cancelable(irp, routine) == STATUS_SUCCESS


def unmark_cancelable(irp: Irp) -> bool:
    """Deprecated: use :func:`unmark_irp_cancelable`, which answers with a status.

    :returns: True where :func:`unmark_irp_cancelable` returns STATUS_SUCCESS.
    """
    _deprecated("airp.unmark_cancelable(irp) -> bool", "airp.unmark_irp_cancelable(irp) -> NtStatus")
    return unmark_irp_cancelable(irp) == STATUS_SUCCESS


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new} (see docs/queues.md, 'One vocabulary')", DeprecationWarning, stacklevel=3)


# -- cancel-safe queues (6.4) ----------------------------------------------------------------------


class CsqIrpContext:
    """``IO_CSQ_IRP_CONTEXT``: a handle on one queued IRP, for :meth:`CancelSafeQueue.remove`.

    :ivar irp: the queued IRP, or ``None`` once it has been removed or cancelled.
    :ivar queue: the queue it was inserted into.
    """

    __slots__ = ("irp", "queue")

    def __init__(self) -> None:
        self.irp: Irp | None = None
        self.queue: CancelSafeQueue | None = None

    def __repr__(self) -> str:
        return f"<CsqIrpContext irp={self.irp!r}>"


InsertIrp = Callable[[Irp, Any], "int | None"]
RemoveIrp = Callable[[Irp], None]
PeekNextIrp = Callable[["Irp | None", Any], "Irp | None"]
CompleteCanceledIrp = Callable[[Irp], None]


class CancelSafeQueue:
    """``IO_CSQ``: a queue of pending IRPs that never loses or double-completes a cancelled one.

    A driver uses it instead of writing cancel routines: :meth:`insert` pends an IRP and makes it
    cancelable; :meth:`remove_next` and :meth:`remove` take IRPs back out for processing; an IRP
    that is cancelled while queued is taken out and completed with STATUS_CANCELLED by the queue.

    The storage is the driver's, through four plain functions (the ``IoCsqInitialize`` callbacks),
    given to the constructor or overridden in a subclass:

    ``insert_irp(irp, insert_context) -> status | None``
        store the IRP; return an error status to refuse it (``IoCsqInsertIrpEx``).
    ``remove_irp(irp)``
        unlink the IRP from the storage.
    ``peek_next_irp(irp, peek_context) -> Irp | None``
        the next stored IRP after *irp* (from the head if *irp* is ``None``) that matches
        *peek_context*, or ``None``.
    ``complete_canceled_irp(irp)``
        complete a cancelled IRP; the default completes it with STATUS_CANCELLED, 0 bytes.

    :class:`IrpQueue` is a ready-made storage (FIFO, peek context matched against the IRP's file
    object).  None of the callbacks may await: they run inside :func:`~airp.cancel_irp` and inside
    the queue operations.  ``AcquireLock`` / ``ReleaseLock`` have no counterpart: on the event loop's
    thread, a queue operation that does not await cannot be interleaved with another one.

    A callback that raises: ``insert_irp`` leaves the IRP with the dispatch routine that offered it
    (not queued, not pended); ``peek_next_irp`` has taken nothing; ``remove_irp`` and
    ``complete_canceled_irp`` raise with the IRP already out of the queue, so the queue completes
    it with STATUS_INTERNAL_ERROR unless the callback completed it, and the exception propagates.
    A storage whose ``remove_irp`` raised may still list the IRP: it is skipped from then on (it
    has no cancel routine), but the storage is the driver's to repair.
    """

    def __init__(
        self,
        *,
        insert_irp: InsertIrp | None = None,
        remove_irp: RemoveIrp | None = None,
        peek_next_irp: PeekNextIrp | None = None,
        complete_canceled_irp: CompleteCanceledIrp | None = None,
    ) -> None:
        for name, fn in (
            ("insert_irp", insert_irp),
            ("remove_irp", remove_irp),
            ("peek_next_irp", peek_next_irp),
            ("complete_canceled_irp", complete_canceled_irp),
        ):
            if fn is not None:
                _check_plain(name, fn)
                setattr(self, name, fn)
        for name in ("insert_irp", "remove_irp", "peek_next_irp", "complete_canceled_irp"):
            _check_plain(name, getattr(self, name))
        # Only IRPs inserted with a context record are listed here (DriverContext[3] in Windows).
        self._contexts: dict[Irp, CsqIrpContext] = {}
        self._cancel_routine: CancelRoutine = self._csq_cancel

    # -- the storage callbacks (override, or pass to the constructor) ------------------------------

    def insert_irp(self, irp: Irp, insert_context: Any) -> int | None:
        """Store *irp*.  Return ``None`` or a success status to accept it, an error to refuse it."""
        raise NotImplementedError(f"{type(self).__name__} has no insert_irp callback")

    def remove_irp(self, irp: Irp) -> None:
        """Unlink *irp* from the storage."""
        raise NotImplementedError(f"{type(self).__name__} has no remove_irp callback")

    def peek_next_irp(self, irp: Irp | None, peek_context: Any) -> Irp | None:
        """The next stored IRP after *irp* (``None``: from the head) matching *peek_context*."""
        raise NotImplementedError(f"{type(self).__name__} has no peek_next_irp callback")

    def complete_canceled_irp(self, irp: Irp) -> None:
        """Complete a cancelled IRP: STATUS_CANCELLED with no information, by default.

        If an override raises without completing the IRP, the queue completes it with
        STATUS_INTERNAL_ERROR, not STATUS_CANCELLED, and the exception propagates to whoever
        cancelled.  That is often not the requester awaiting the IRP (a timeout, ``CancelIo``, a
        cleanup, a device removal), so the IRP's status is the only place the requester can learn
        that the driver failed; STATUS_CANCELLED would pass a driver bug off as an ordinary
        cancellation, and would guess at a status the callback may not have meant (it may have
        been about to complete with STATUS_DEVICE_REMOVED, say).  It is also what every other
        raising routine's IRP completes with, so there is one rule to learn.
        """
        complete_request(irp, STATUS_CANCELLED, 0)

    # -- the queue operations -----------------------------------------------------------------------

    def insert(self, irp: Irp, context: CsqIrpContext | None = None, insert_context: Any = None) -> NtStatus:
        """``IoCsqInsertIrpEx``: pend *irp* in the queue and make it cancelable.

        The family's verb for "queue this IRP and return STATUS_PENDING" (as
        :meth:`airp.IoQueue.insert`; StartIo keeps its Windows name, ``start_packet``).

        The IRP is stored (``insert_irp``), marked pending, and armed with the queue's cancel
        routine; if it had already been cancelled, it is taken straight back out and completed with
        STATUS_CANCELLED (``complete_canceled_irp``) before this returns.  Either way the dispatch
        routine returns the result, STATUS_PENDING::

            return queue.insert(irp)

        If ``insert_irp`` refuses the IRP with an error status, that status is returned, the IRP is
        not queued and not marked pending: complete it with that status and return it.
        (Departure: ReactOS marks the IRP pending before asking; airp marks it after, which no other
        code can observe since nothing runs in between, so a refused IRP is not left marked.)

        If ``insert_irp`` raises, the IRP is treated as refused: it is not queued, not marked
        pending and has no cancel routine, *context* is free again, and the exception propagates
        to the dispatch routine, which still holds the IRP (a dispatch routine that lets the
        exception escape has it completed with STATUS_INTERNAL_ERROR by :func:`~airp.call_driver`).
        If the IRP was already cancelled and ``remove_irp`` or ``complete_canceled_irp`` raises,
        the IRP is completed with STATUS_INTERNAL_ERROR unless the callback completed it, and the
        exception propagates.

        :param context: a :class:`CsqIrpContext` to fill in, for :meth:`remove` of this very IRP.
        :param insert_context: passed to ``insert_irp``.
        :returns: STATUS_PENDING, or ``insert_irp``'s error status.
        :raises IrpStateError: if the IRP has no current stack location (never sent, or completed),
            already has a cancel routine (it is queued somewhere), or *context* is in use.
        :raises TypeError: if *irp* is not an IRP, or *context* not a CsqIrpContext.
        :raises Exception: whatever a callback raised, as above.
        """
        if type(irp) is not Irp and not isinstance(irp, Irp):
            raise must_be("insert(irp): irp", "an Irp", irp)
        if irp._index >= irp.stack_count:
            raise IrpStateError(f"cannot queue {irp!r}: only an IRP a driver has received (with a current stack location) can be pended")
        if irp.cancel_routine is not None:
            raise IrpStateError(
                f"cannot queue {irp!r}: it already has cancel routine {irp.cancel_routine!r} (is it in another queue?)"
            )
        if irp in self._contexts:
            raise IrpStateError(f"{irp!r} is already in {self!r}")
        if context is not None:
            if not isinstance(context, CsqIrpContext):
                raise must_be("insert(irp, context): context", "a CsqIrpContext or None", context)
            if context.irp is not None:
                raise IrpStateError(f"{context!r} is still in use for another IRP")
            context.irp = irp
            context.queue = self
            self._contexts[irp] = context
        try:
            status = self.insert_irp(irp, insert_context)
        except BaseException:
            self._release_context(irp, context)
            raise
        if status is not None and not nt_success(status):
            self._release_context(irp, context)
            return NtStatus(status)
        irp.mark_pending()
        irp.set_cancel_routine(self._cancel_routine)
        if irp.cancel and irp.set_cancel_routine(None) is not None:
            # Cancelled before it was armed and we took the routine back: the queue completes it.
            self._complete_canceled(irp)
        return STATUS_PENDING

    def remove_next(self, peek_context: Any = None) -> Irp | None:
        """``IoCsqRemoveNextIrp``: take the first queued IRP matching *peek_context* out.

        The counterpart of :meth:`airp.IoQueue.retrieve_next_request` (a manual queue's pull).

        IRPs whose cancel routine has already been taken (a cancel is in flight) are skipped: the
        cancel routine owns them.  The IRP returned is no longer cancelable and belongs to the
        caller, which must complete it (or pass it on).

        :param peek_context: given to ``peek_next_irp`` (for :class:`IrpQueue`: a file object, or
            ``None`` for any IRP).
        :returns: the IRP, or ``None`` if none matches.
        :raises Exception: whatever ``peek_next_irp`` raised (nothing was taken), or
            ``remove_irp`` raised (the IRP it was unlinking was completed with
            STATUS_INTERNAL_ERROR, since the caller never got it).
        """
        irp = self.peek_next_irp(None, peek_context)
        while irp is not None:
            if irp.set_cancel_routine(None) is None:
                irp = self.peek_next_irp(irp, peek_context)
                continue
            self._take_out(irp)
            break
        return irp

    def remove(self, context: CsqIrpContext) -> Irp | None:
        """``IoCsqRemoveIrp``: take the IRP inserted with *context* out, if it is still queued.

        :returns: the IRP, now the caller's to complete; ``None`` if it was already removed or
            cancelled (or its cancel is in flight, in which case the queue's cancel routine will
            complete it).
        :raises Exception: whatever ``remove_irp`` raised; the IRP was then completed with
            STATUS_INTERNAL_ERROR, since the caller never got it.
        :raises TypeError: if *context* is not a CsqIrpContext.
        """
        if not isinstance(context, CsqIrpContext):
            raise must_be("remove(context): context", "the CsqIrpContext given to insert", context)
        irp = context.irp
        if irp is None:
            return None
        if irp.set_cancel_routine(None) is None:
            return None
        self._take_out(irp)
        return irp

    def complete_all(self, peek_context: Any = None, status: int = STATUS_CANCELLED) -> int:
        """Take out every IRP matching *peek_context* and complete it with *status*, now.

        The IRP_MJ_CLEANUP loop of reference 6.5 (``while IoCsqRemoveNextIrp(file)``: complete it as
        cancelled), also usable at device removal with ``peek_context=None``.  No cancel routine
        runs and ``complete_canceled_irp`` is not consulted (:meth:`cancel_all` does that).  Not to
        be confused with :meth:`airp.IoQueue.drain` (``WdfIoQueueDrain``), which refuses new
        requests and keeps delivering queued ones; this was called ``drain`` before.

        :returns: how many IRPs were completed.
        :raises Exception: what a callback raised (see :meth:`remove_next`), or what an upper
            driver's completion routine raised while one was completed (the walk still finished
            it).  The loop stops there; the IRPs not reached yet stay queued and cancelable.
        :raises TypeError, ValueError: if *status* is not an NTSTATUS (checked first, queue or not).
        """
        status = NtStatus(status)
        count = 0
        while (irp := self.remove_next(peek_context)) is not None:
            complete_request(irp, status, 0)
            count += 1
        return count

    def drain(self, peek_context: Any = None, status: int = STATUS_CANCELLED) -> int:
        """Deprecated name of :meth:`complete_all` (``IoQueue.drain`` means something else).

        :returns: as :meth:`complete_all`.
        """
        _deprecated("CancelSafeQueue.drain(peek_context)", "CancelSafeQueue.complete_all(peek_context)")
        return self.complete_all(peek_context, status)

    def cancel_all(self, peek_context: Any = None) -> int:
        """Cancel every queued IRP matching *peek_context* with :func:`~airp.cancel_irp`.

        Unlike :meth:`complete_all` this goes through the cancel protocol (sets each IRP's cancel
        flag and runs the queue's cancel routine, so ``complete_canceled_irp`` decides the status).

        Every IRP is cancelled even if cancelling one raises (a raising callback, whose IRP is
        then completed with STATUS_INTERNAL_ERROR); the first exception is raised at the end.

        :returns: exactly how many IRPs this call cancelled: those whose cancel routine it ran.  An
            IRP still listed whose cancel is already in flight (its routine was taken by someone
            else's :func:`~airp.cancel_irp` and has not finished yet) is not counted, nor is one
            that a callback run by an earlier cancel of this call completed.
        :raises Exception: the first exception a cancel raised, once all have been cancelled.
        """
        victims: list[Irp] = []
        irp = self.peek_next_irp(None, peek_context)
        while irp is not None:
            victims.append(irp)
            irp = self.peek_next_irp(irp, peek_context)
        first: Exception | None = None
        cancelled = 0
        routine = self._cancel_routine
        for irp in victims:
            if irp.cancel_routine is not routine:
                continue  # its cancel is in flight (or it left the queue meanwhile): not ours to count
            try:
                if cancel_irp(irp):
                    cancelled += 1
            except Exception as error:
                cancelled += 1  # its routine ran (and its IRP was finished), then raised
                if first is None:
                    first = error
        if first is not None:
            raise first
        return cancelled

    # -- internals -------------------------------------------------------------------------------

    def _release_context(self, irp: Irp, context: CsqIrpContext | None) -> None:
        # An insert that did not queue the IRP: its context is free for another one.
        if context is not None:
            del self._contexts[irp]
            context.irp = None

    def _unlink(self, irp: Irp) -> None:
        context = self._contexts.pop(irp, None) if self._contexts else None
        if context is not None:
            context.irp = None
        self.remove_irp(irp)

    def _take_out(self, irp: Irp) -> None:
        """Unlink an IRP whose cancel routine the caller has disarmed, to hand it to the caller."""
        level = irp._index
        try:
            self._unlink(irp)
        except BaseException as error:
            _not_lost(irp, level, error)
            raise

    def _complete_canceled(self, irp: Irp) -> None:
        """Unlink a cancelled IRP (its cancel routine taken) and complete it as cancelled."""
        level = irp._index
        try:
            self._unlink(irp)
            self.complete_canceled_irp(irp)
        except BaseException as error:
            _not_lost(irp, level, error)
            raise

    def _csq_cancel(self, device: Any, irp: Irp) -> None:
        # The internal cancel routine: the routine has been taken, so nobody else will remove this
        # IRP; take it out of storage and complete it as cancelled.
        self._complete_canceled(irp)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _not_lost(irp: Irp, level: int, error: BaseException) -> None:
    """A callback raised while *irp* was out of the queue and on its way to someone: finish it.

    The IRP is still the queue's if it is at the location it was queued at: not completed (that
    moves it up) and not passed on (down).  Its cancel routine is disarmed first, in case the
    callback armed one; the exception is kept as :attr:`~airp.Irp.routine_error`.
    """
    if irp._index != level:
        return
    irp.cancel_routine = None
    if irp.routine_error is None:
        irp.routine_error = error
    # What that completion raises is chained to *error* (the first bug check wins).
    complete_after_error(irp, error, STATUS_INTERNAL_ERROR)


def _check_plain(name: str, fn: object) -> None:
    # A bad callback would only be found out inside cancel_irp or a queue operation, with an IRP
    # half in the queue: refuse it when the queue is made.
    problem = _not_plain_function(fn)
    if problem is not None:
        raise TypeError(
            f"{name} must be a plain function; {problem} (cancel-safe queue callbacks run inside"
            " cancel_irp and the queue operations, and cannot await)"
        )


def _same_file_object(irp: Irp, peek_context: Any) -> bool:
    index = irp._index
    file_object = irp._stack[index].file_object if index < irp.stack_count else None
    if file_object is None:
        file_object = irp.file_object
    return file_object is peek_context


class IrpQueue(CancelSafeQueue):
    """A ready-made :class:`CancelSafeQueue`: FIFO storage, peek context matched by file object.

    Insert, remove and "next after" are O(1) (a linked list threaded through a dict), so cancelling
    any number of queued IRPs in any order costs the same per IRP.

    :param matches: ``matches(irp, peek_context) -> bool`` decides which IRPs :meth:`remove_next`
        may return for a peek context other than ``None``.  The default compares *peek_context*
        with the file object of the IRP's current stack location (or ``irp.file_object``): the
        IRP_MJ_CLEANUP case.
    :param complete_canceled_irp: as in :class:`CancelSafeQueue`.
    """

    def __init__(
        self,
        *,
        matches: Callable[[Irp, Any], bool] | None = None,
        complete_canceled_irp: CompleteCanceledIrp | None = None,
    ) -> None:
        # irp -> [previous, next]; _head/_tail are the ends.
        self._links: dict[Irp, list[Irp | None]] = {}
        self._head: Irp | None = None
        self._tail: Irp | None = None
        if matches is not None:
            _check_plain("matches", matches)
        self._matches: Callable[[Irp, Any], bool] = matches or _same_file_object
        super().__init__(complete_canceled_irp=complete_canceled_irp)

    def insert_irp(self, irp: Irp, insert_context: Any) -> int | None:
        tail = self._tail
        self._links[irp] = [tail, None]
        if tail is None:
            self._head = irp
        else:
            self._links[tail][1] = irp
        self._tail = irp
        return None

    def remove_irp(self, irp: Irp) -> None:
        prev, nxt = self._links.pop(irp)
        if prev is None:
            self._head = nxt
        else:
            self._links[prev][1] = nxt
        if nxt is None:
            self._tail = prev
        else:
            self._links[nxt][0] = prev

    def peek_next_irp(self, irp: Irp | None, peek_context: Any) -> Irp | None:
        candidate = self._head if irp is None else self._links[irp][1]
        if peek_context is None:
            return candidate
        matches = self._matches
        while candidate is not None and not matches(candidate, peek_context):
            candidate = self._links[candidate][1]
        return candidate

    def __len__(self) -> int:
        return len(self._links)

    def __bool__(self) -> bool:
        return bool(self._links)

    def __contains__(self, irp: object) -> bool:
        return irp in self._links

    def __iter__(self) -> Iterator[Irp]:
        """The queued IRPs, oldest first (a snapshot: safe to cancel or remove while iterating)."""
        items: list[Irp] = []
        irp = self._head
        while irp is not None:
            items.append(irp)
            irp = self._links[irp][1]
        return iter(items)

    def __repr__(self) -> str:
        return f"<IrpQueue {len(self._links)} queued>"
