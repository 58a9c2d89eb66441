"""Sending an IRP a driver created: :func:`~airp.call_driver` with the StackSize rule checked first.

The rest of the bookkeeping of driver-created IRPs (allocation, freeing, reuse, the rule of 5.8) is
the IRP machine's, in :mod:`airp._machine._allocation`; sending awaits a dispatch routine, so it
belongs to the async shell.
"""

from __future__ import annotations

from .._machine._allocation import _CREATOR, _FREED, _KIND, _ROUTINE
from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._device import DeviceObject
from .._machine._irp import Irp
from .._machine._status import NtStatus
from ._call import call_driver

__all__ = ["send_irp"]


async def send_irp(device: DeviceObject, irp: Irp) -> NtStatus:
    """:func:`~airp.call_driver` for an IRP the driver created, with the StackSize rule checked first.

    An IRP for *device* needs at least ``device.stack_size`` locations below its sender's (reference
    8.3).  :func:`~airp.call_driver` notices only when the last location is used up (bug check
    0x35, deep in another driver's stack); this check fails at the send, naming both sizes.  It is
    what Driver Verifier's 0x208 ("this IRP is about to run out of stack locations; someone may
    have forwarded it from another stack") reports, raised before the IRP leaves its creator.

    It also records where the creator holds the IRP (the highest location it is sent from: drivers
    below forward it from lower ones), so that :func:`~airp.free_irp`, :func:`~airp.reuse_irp`
    and :meth:`IrpPool.put <airp.IrpPool.put>` see a lower driver holding it until it comes back,
    even when it was sent without a completion routine.

    On cancellation: as :func:`~airp.call_driver` (this call adds no checkpoint).

    :returns: the status the dispatch routine of *device* returned.
    :raises BugCheck: 0xC9 / 0x208 if *irp* has fewer locations left than *device* needs; 0xC9 / 0x03
        if *irp* has been freed; and whatever :func:`~airp.call_driver` raises.
    """
    if isinstance(device, DeviceObject) and isinstance(irp, Irp):
        available = irp._index
        if available < device.stack_size:
            raise BugCheck(
                BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                f"{irp!r} has {available} stack location(s) left below its sender, but {device!r} needs"
                f" {device.stack_size} (its stack_size): allocate IRPs for a target with at least the"
                " target's stack_size, one more if the sender keeps a location of its own",
                parameters=(VerifierCode.STACK_LOCATIONS_RUNNING_OUT, irp, device.stack_size, available),
                irp=irp,
                device=device,
                driver=device.driver,
            )
        d = irp.__dict__
        if _KIND in d:
            if _FREED in d:
                raise BugCheck(
                    BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                    f"send_irp with {irp!r}, which has been freed: a freed IRP is no longer an IRP",
                    parameters=(VerifierCode.CALL_DRIVER_NON_IRP, irp, 0, 0),
                    irp=irp,
                    device=device,
                )
            if available:
                d[_ROUTINE] = irp._stack[available - 1].completion_routine
        # A driver's own IRP (a bare Irp(n) too): the sender's location is the creator's, unless
        # a driver below forwards the IRP on (from a lower location), so the highest one seen is
        # the creator's, which free_irp and reuse_irp judge "in use" against.
        own = _KIND in d or (irp._final_stage is None and irp.master_irp is None)
        if own and d.get(_CREATOR, -1) < available:
            d[_CREATOR] = available
    return await call_driver(device, irp)

