"""IrpPool: a device's own recycled IRPs (the pattern of the HID class driver's ``HidClass_BuildIrp``).

A driver that sends many IRPs of its own (an interrupt transfer per read, a poll every few
milliseconds) pays for an allocation and a free each time.  The pool keeps the IRPs that came back:
:meth:`IrpPool.get` hands out an idle one, reset with :func:`~airp.reuse_irp`, and allocates only
when none is idle; the completion routine gives the IRP back with :meth:`IrpPool.put` instead of
freeing it.  When the device goes away, :meth:`IrpPool.close` frees the idle IRPs and reports those
still out.

In CPython resetting an IRP costs about as much as making one (``benchmarks/bench_allocation.py``:
within a few percent per IRP), so the pool's gains here are bounded memory, a reuse path that cannot
fail under low resources, and the Windows driver's structure, rather than speed.

Windows guards the idle list with a spin lock, because completion routines run on any processor.
airp's completion routines run on the event loop's one thread and every pool call is synchronous
(none awaits), so a call is atomic with respect to every other task: concurrent tasks can share a
pool without a lock.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from .._machine._allocation import (
    _CREATOR,
    _FREED,
    _KIND,
    IrpAllocator,
    _allocate,
    _Origin,
    _reset,
    _reusable,
    free_irp,
)
from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._device import DeviceObject
from .._machine._irp import Irp
from .._machine._misuse import must_be
from .._machine._status import STATUS_SUCCESS, NtStatus
from .._shell._send import send_irp

__all__ = ["IrpPool", "IrpPoolReport", "IrpPoolStatistics"]


@dataclass(frozen=True, slots=True)
class IrpPoolStatistics:
    """A snapshot of an :class:`IrpPool`.

    :ivar idle: IRPs waiting to be handed out again.
    :ivar in_use: IRPs handed out and not given back.
    :ivar max_idle: how many idle IRPs the pool keeps at most.
    :ivar reused: :meth:`IrpPool.get` calls served by an idle IRP.
    :ivar allocated: :meth:`IrpPool.get` calls that allocated a new IRP.
    :ivar failed: :meth:`IrpPool.get` calls whose allocation failed (they returned ``None``).
    :ivar freed: IRPs the pool freed: beyond *max_idle*, too small for a grown target, at close,
        or given back after the close.
    :ivar closed: True once :meth:`IrpPool.close` has been called.
    """

    idle: int
    in_use: int
    max_idle: int
    reused: int
    allocated: int
    failed: int
    freed: int
    closed: bool


@dataclass(frozen=True, slots=True)
class IrpPoolReport:
    """What :meth:`IrpPool.close` found.

    :ivar freed: idle IRPs freed by the close.
    :ivar in_use: IRPs still out (sent, or held by the driver) when the pool closed.  The pool
        frees each of them when it is given back; a driver that never gives one back leaks it.
    """

    freed: int
    in_use: tuple[Irp, ...]

    @property
    def clean(self) -> bool:
        """True if every IRP was back when the pool closed."""
        return not self.in_use


class IrpPool:
    """A per-device pool of idle IRPs for the requests a driver sends to *target*.

    ::

        pool = airp.IrpPool(device)               # targets device.lower_device

        irp = pool.get()                          # reused if one is idle, else allocated
        if irp is None:
            ...                                   # allocation failed: STATUS_INSUFFICIENT_RESOURCES
        irp.next_stack_location.major = ...
        irp.set_completion_routine(done, context)
        await pool.send(irp)

        def done(device, irp, context):
            ...                                   # read the result, complete the original request
            pool.put(irp)                         # instead of free_irp
            return airp.STATUS_MORE_PROCESSING_REQUIRED

    IRPs have ``target.stack_size`` locations, one more with *own_location* (the pool then calls
    :meth:`~airp.Irp.set_next_stack_location` on each IRP it hands out and records *device* in that
    location, so the creator's completion routine receives *device* and may mark the IRP pending,
    reference 5.8).  If the target's stack grows (a filter attached below), idle IRPs that are now
    too small are freed and new ones allocated.

    The rules of driver-allocated IRPs hold for pooled ones: the completion routine must return
    STATUS_MORE_PROCESSING_REQUIRED (bug check 0x2A otherwise), and an IRP may be given back only
    once no lower driver holds it.  Give pooled IRPs back with :meth:`put`, never
    :func:`~airp.free_irp`.

    Deleting the device (``delete_device``, which a driver does in IRP_MN_REMOVE_DEVICE) closes
    the pool; :meth:`close` may also be called earlier.  Unloading the driver
    (:meth:`airp.IoManager.unload_driver`) is refused while any of its pools has IRPs out.

    :param device: the device whose driver owns the pool.
    :param target: where the IRPs go; default ``device.lower_device``.
    :param own_location: give the creator a stack location of its own.
    :param max_idle: how many idle IRPs to keep at most; more are freed when given back.
    :param allocator: the :class:`~airp.IrpAllocator` to allocate through (its lookaside lists,
        statistics and low-resources simulation); ``None`` for plain allocations.
    :raises ValueError: if *target* is not given and *device* has no lower device, or *max_idle*
        is negative.
    :raises TypeError: if *device* or *target* is not a device, or *allocator* not an IrpAllocator.
    """

    def __init__(
        self,
        device: DeviceObject,
        target: DeviceObject | None = None,
        *,
        own_location: bool = False,
        max_idle: int = 64,
        allocator: IrpAllocator | None = None,
    ) -> None:
        if not isinstance(device, DeviceObject):
            raise TypeError(f"an IrpPool belongs to a DeviceObject, got {type(device).__name__} {device!r}")
        if target is None:
            target = device.lower_device
            if target is None:
                raise ValueError(f"{device!r} is not attached to a lower device: give the pool a target")
        if not isinstance(target, DeviceObject):
            raise TypeError(f"an IrpPool's target is a DeviceObject, got {type(target).__name__} {target!r}")
        if type(max_idle) is not int or max_idle < 0:
            raise ValueError(f"max_idle must be an int >= 0, got {max_idle!r}")
        if allocator is not None and not isinstance(allocator, IrpAllocator):
            raise must_be("allocator", "an airp.IrpAllocator or None", allocator)
        self.device = device
        self.target = target
        self.own_location = bool(own_location)
        self.max_idle = max_idle
        self.allocator = allocator
        self._idle: list[Irp] = []
        self._out: dict[Irp, None] = {}
        self._closed = False
        self._reused = 0
        self._allocated = 0
        self._failed = 0
        self._freed = 0
        # Deleting the device closes the pool (its idle IRPs are freed there, not leaked), and
        # unloading the driver names the IRPs still out.
        hooks = device._on_delete
        if hooks is None:
            hooks = device._on_delete = []
        hooks.append(self.close)
        device.driver._irp_pools.add(self)

    @property
    def stack_size(self) -> int:
        """The stack size of the IRPs handed out now: the target's, plus one with *own_location*."""
        return self.target.stack_size + self.own_location

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    @property
    def in_use(self) -> tuple[Irp, ...]:
        """The IRPs handed out and not given back, oldest first."""
        return tuple(self._out)

    def get(self, status: int = STATUS_SUCCESS) -> Irp | None:
        """An IRP for :attr:`target`: an idle one reset with ``IoReuseIrp``, or a new one.

        The IRP is fresh: no current location (or the creator's own, with *own_location*), the
        next location empty, ``irp.status`` = *status*.  Reusing cannot fail; allocating can (the
        allocator's low-resources simulation), and then the result is ``None``.

        :param status: the status a reused IRP starts with (``IoReuseIrp``'s argument).
        :returns: the IRP, or ``None`` if no IRP was idle and the allocation failed.
        :raises RuntimeError: if the pool has been closed (its device is gone).
        :raises TypeError, ValueError: if *status* is not an NTSTATUS.
        """
        if type(status) is not NtStatus:
            status = NtStatus(status)  # a plain int passes; anything else is refused here, not on reuse
        if self._closed:
            raise RuntimeError(f"{self!r} is closed: its device has been removed, it sends no more requests")
        stack_size = self.target.stack_size + self.own_location
        idle = self._idle
        irp: Irp | None = None
        while idle:
            candidate = idle.pop()
            if candidate.stack_count == stack_size:
                _reset(candidate, candidate.__dict__[_KIND], status)
                self._reused += 1
                irp = candidate
                break
            # The target's stack has changed since this IRP was allocated.
            free_irp(candidate)
            self._freed += 1
        if irp is None:
            irp = _allocate(stack_size, False, self.allocator, _Origin.ALLOCATED, "IrpPool.get")
            if irp is None:
                self._failed += 1
                return None
            self._allocated += 1
            if status:
                irp.status = status
        if self.own_location:
            irp.set_next_stack_location()
            irp.current_stack_location.device = self.device
        # The pool knows where its driver holds the IRP: put, free_irp and reuse_irp then see a
        # lower driver holding it however it was sent (plain call_driver, no completion routine).
        irp.__dict__[_CREATOR] = irp._index
        self._out[irp] = None
        return irp

    def put(self, irp: Irp) -> None:
        """Give back an IRP from :meth:`get`, typically as the last thing its completion routine does.

        The IRP joins the idle list (or is freed if the list is full or the pool closed).  It is not
        reset until it is handed out again, so the rest of the completion walk, and a tracing monitor,
        still see it as it was.  The caller must not touch it afterwards.

        A lower driver holds the IRP while its current location is below the one :meth:`get`
        handed it out at, whether or not it was sent with a completion routine.

        :raises ValueError: if *irp* did not come from this pool.
        :raises BugCheck: 0xC9 / 0x01 if it was already given back (as freeing an IRP twice);
            0xC9 / 0x310 if it is still in use: a lower driver holds it or a cancel routine is set.
        """
        out = self._out
        if irp not in out:
            if any(idle is irp for idle in self._idle):
                raise BugCheck(
                    BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                    f"{irp!r} was given back to {self!r} twice: after put the IRP belongs to the pool",
                    parameters=(VerifierCode.FREE_NON_IRP, irp, 0, 0),
                    irp=irp,
                    device=self.device,
                    driver=self.device.driver,
                )
            raise ValueError(f"{irp!r} did not come from {self!r} (or was already given back after a close)")
        if irp._index < irp.stack_count or irp.cancel_routine is not None or _FREED in irp.__dict__:
            _reusable(irp, "IrpPool.put")  # the full checks: raises unless the IRP may be reused
        del out[irp]
        if self._closed or len(self._idle) >= self.max_idle:
            free_irp(irp)
            self._freed += 1
        else:
            self._idle.append(irp)

    def send(self, irp: Irp) -> Coroutine[Any, Any, NtStatus]:
        """Send *irp* to :attr:`target` with :func:`~airp.send_irp` (the StackSize rule checked).

        Await the result: ``await pool.send(irp)``.  (It returns :func:`~airp.send_irp`'s coroutine
        itself, so the send costs no extra coroutine frame.)

        On cancellation: as :func:`~airp.call_driver`.

        :returns: an awaitable of the status the target's dispatch routine returned.
        :raises BugCheck: as :func:`~airp.send_irp`, when awaited.
        """
        return send_irp(self.target, irp)

    def close(self) -> IrpPoolReport:
        """Empty the pool because its device is going away: free the idle IRPs, report the rest.

        Deleting the pool's device (``delete_device``) calls it.  Afterwards :meth:`get` raises, and IRPs still out are freed as they are given back.  Closing
        twice frees nothing more and reports what is still out.

        :returns: how many idle IRPs were freed, and the IRPs still in use.
        """
        self._closed = True
        freed = 0
        idle = self._idle
        while idle:
            free_irp(idle.pop())
            freed += 1
        self._freed += freed
        return IrpPoolReport(freed, tuple(self._out))

    def statistics(self) -> IrpPoolStatistics:
        """A frozen snapshot of the pool's counters."""
        return IrpPoolStatistics(
            len(self._idle),
            len(self._out),
            self.max_idle,
            self._reused,
            self._allocated,
            self._failed,
            self._freed,
            self._closed,
        )

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<IrpPool of {self.device!r} -> {self.target!r}: {len(self._idle)} idle, {len(self._out)} in use{state}>"
