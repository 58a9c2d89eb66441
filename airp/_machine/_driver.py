"""Driver objects: a table of coroutine dispatch routines, one per major function."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._codes import MAJOR_FUNCTION_COUNT, IrpMajor
from ._completion import complete_request
from ._misuse import must_be
from ._status import STATUS_INVALID_DEVICE_REQUEST

if TYPE_CHECKING:
    from ._device import DeviceObject
    from ._irp import Irp

__all__ = ["DispatchRoutine", "Driver", "dispatch"]

#: ``async def routine(device, irp) -> status``.  It completes the IRP, passes it down, or marks it
#: pending and returns STATUS_PENDING.  The status it returns goes back unchanged to whoever called
#: :func:`~airp.call_driver`.
DispatchRoutine = Callable[["DeviceObject", "Irp"], Awaitable[int]]

_F = TypeVar("_F", bound=Callable[..., Awaitable[int]])

_PASS_DOWN_UNTOUCHED = frozenset((IrpMajor.PNP, IrpMajor.POWER, IrpMajor.SYSTEM_CONTROL))


async def _no_pass_down(device: DeviceObject, irp: Irp) -> int:
    # Runs only where no async shell was imported: the machine alone cannot send an IRP on.
    raise RuntimeError(
        f"{device.driver!r} cannot pass {irp!r} down: sending an IRP to the device below is the async"
        " shell's job; import airp (or airp._shell._call), which installs pass_down"
    )


#: What a pass-through driver's default dispatch routine awaits: the async shell's ``pass_down``,
#: which airp._shell._call installs here when it is imported (_install_pass_down).
_shell_pass_down: DispatchRoutine = _no_pass_down


def _install_pass_down(routine: DispatchRoutine) -> None:
    """The async shell's hook: a pass-through driver passes unhandled IRPs down with *routine*."""
    global _shell_pass_down
    _shell_pass_down = routine


def dispatch(*majors: IrpMajor | int) -> Callable[[_F], _F]:
    """Declare a :class:`Driver` method as the dispatch routine for one or more major functions.

    ::

        class Disk(airp.Driver):
            @airp.dispatch(airp.IrpMajor.READ, airp.IrpMajor.WRITE)
            async def read_write(self, device, irp):
                ...

    :raises ValueError: if a major function code is out of range or none is given.
    :raises TypeError: (when applied) if the method is not an ``async def``.
    """
    if not majors:
        raise ValueError("dispatch() needs at least one major function code")
    codes = tuple(_check_major(m) for m in majors)

    def mark(func: _F) -> _F:
        is_async = inspect.iscoroutinefunction(func)  # a variable: the TypeGuard would narrow _F
        if not is_async:
            raise TypeError(f"dispatch routine {func.__qualname__} must be an async def (it may await lower drivers)")
        existing: tuple[int, ...] = getattr(func, "_airp_majors", ())
        func._airp_majors = existing + codes  # type: ignore[attr-defined]
        return func

    return mark


def _check_major(major: object) -> int:
    if not isinstance(major, int) or isinstance(major, bool) or not 0 <= major < MAJOR_FUNCTION_COUNT:
        raise ValueError(f"a major function code is an IrpMajor (0..{MAJOR_FUNCTION_COUNT - 1:#x}), got {major!r}")
    return int(major)


class Driver:
    """``DRIVER_OBJECT``: the dispatch table shared by all devices of one driver.

    Subclass it and declare dispatch routines with :func:`dispatch`, or fill the table with
    :meth:`set_dispatch`.  A major function the driver does not handle answers
    STATUS_INVALID_DEVICE_REQUEST, as the I/O manager's default does, except PnP, power and WMI
    requests, which are passed down untouched (and completed with the status they carry at the
    bottom of the stack), as reference 8.2 requires of every driver; a filter driver sets
    ``pass_through = True`` so that everything it does not handle is skipped down to the device
    below, untouched (which is also what PnP, power and WMI requests need, reference 8.2).

    ``pass_through`` may be set on the class or on one driver, before or after devices are
    created: the default entry of the table reads it each time it runs, so a major function
    without a routine of its own follows the current value.  A routine installed with
    :func:`dispatch` or :meth:`set_dispatch` is never replaced by it.  (In Windows the driver fills
    its ``MajorFunction`` table itself in ``DriverEntry``; airp's default entry stands for the
    table a filter driver fills with its pass-down routine, or the I/O manager's
    ``IopInvalidDeviceRequest``.)

    :param name: a name for traces and bug checks (default: the class name).
    :raises TypeError: if *name* is neither a str nor ``None``.
    :ivar major_function: the dispatch table, indexed by major function code.
    :ivar devices: the devices this driver has created.
    """

    #: Pass unhandled major functions down instead of failing them.  Set it on the class, or on
    #: a driver object at any time: the default entry reads it at each call.
    pass_through: bool = False

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise must_be("Driver(name): name", "a str or None (the class name)", name)
        self.name = name or type(self).__name__
        self.devices: list[DeviceObject] = []
        # The IrpPools of this driver's devices, so that unloading can name IRPs never given back.
        self._irp_pools: weakref.WeakSet[Any] = weakref.WeakSet()
        # The IrpAllocators it owns (IrpAllocator(owner=driver)): unloading counts their IRPs out.
        self._irp_allocators: weakref.WeakSet[Any] = weakref.WeakSet()
        default = self._unhandled
        self.major_function: list[DispatchRoutine] = [default] * MAJOR_FUNCTION_COUNT
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                for major in getattr(attr, "_airp_majors", ()):
                    self.major_function[major] = getattr(self, attr.__name__)

    def set_dispatch(self, major: IrpMajor | int, routine: DispatchRoutine) -> None:
        """Install *routine* as the dispatch routine for *major* (``MajorFunction[major] = ...``).

        :raises ValueError: if *major* is out of range.
        :raises TypeError: if *routine* is not a coroutine function.
        """
        code = _check_major(major)
        if not inspect.iscoroutinefunction(routine):
            raise TypeError(f"dispatch routine {routine!r} must be a coroutine function (device, irp) -> status")
        self.major_function[code] = routine

    async def _unhandled(self, device: DeviceObject, irp: Irp) -> int:
        # The default entry of every major function: reads pass_through now, not at __init__, so
        # that setting it on a driver object after construction takes effect.
        if self.pass_through:
            return await _shell_pass_down(device, irp)
        major = irp._stack[irp._index].major
        if major in _PASS_DOWN_UNTOUCHED:
            # PnP, power and WMI requests a driver does not handle go down untouched, and the
            # bottom of the stack completes them with the status they carry (STATUS_NOT_SUPPORTED
            # as sent): reference 8.2, Verifier 0x20E-0x210.
            if device.lower_device is not None:
                return await _shell_pass_down(device, irp)
            status = irp.status
            complete_request(irp, status, irp.information)
            return status
        complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0)
        return STATUS_INVALID_DEVICE_REQUEST

    def __repr__(self) -> str:
        return f"<Driver {self.name}>"


