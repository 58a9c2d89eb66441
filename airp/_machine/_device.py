"""Device objects and device stacks (reference 8.3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, overload

from ._arguments import check_int, must_be
from ._bugcheck import BugCheck, BugCheckCode, VerifierCode
from ._codes import DeviceFlags
from ._driver import Driver
from ._errors import NtStatusError
from ._pnp import PnpState, adding_device
from ._status import STATUS_NO_SUCH_DEVICE

if TYPE_CHECKING:
    # The default (PEP 696) makes a bare ``DeviceObject`` mean ``DeviceObject[Any]``, so code that
    # does not care about the extension's type needs no parameter.  typing.TypeVar takes
    # ``default`` only from Python 3.13: type checkers read typing_extensions' stub, and at run
    # time a plain TypeVar does the same job.
    from typing_extensions import TypeVar

    ExtT = TypeVar("ExtT", default=Any)
else:
    from typing import TypeVar

    ExtT = TypeVar("ExtT")

_INHERITED_FLAGS = DeviceFlags.BUFFERED_IO | DeviceFlags.DIRECT_IO | DeviceFlags.POWER_PAGABLE

__all__ = ["DeviceObject", "attach_device", "delete_device", "detach_device", "get_attached_device"]


class DeviceObject(Generic[ExtT]):
    """``DEVICE_OBJECT``: one layer of a device stack, served by one driver.

    Create devices with :meth:`airp.IoManager.create_device`; stack them with
    :func:`attach_device`.

    The class is generic in the type of its extension, the driver's per-device state: a device
    made with ``extension=Lanes(...)`` (or ``make_extension=``) is a ``DeviceObject[Lanes]``, and
    a dispatch routine that declares ``device: DeviceObject[Lanes]`` reads
    ``device.extension.read`` fully typed, with no ``cast`` or ``# type: ignore``.  A bare
    ``DeviceObject`` is ``DeviceObject[Any]``.  (Windows' ``DeviceExtension`` is an untyped block
    of ``DeviceExtensionSize`` bytes the driver casts to its own struct; the type parameter is
    that cast, checked.)

    :ivar driver: the driver whose dispatch routines serve this device.
    :ivar name: the name in the I/O manager's namespace, or ``None`` for an unnamed device.
    :ivar stack_size: how many stack locations an IRP sent to this device needs: 1 for a device
        created alone, one more than the device below when attached (reference 8.3).
    :ivar flags: ``DeviceFlags`` (``DO_BUFFERED_IO``, ``DO_DIRECT_IO``, ...).
    :ivar lower_device: the device this one is attached to (what :func:`attach_device` returned),
        where the driver sends IRPs it passes down.
    :ivar attached_device: the device attached directly above this one.
    :ivar extension: the driver's per-device state (``DeviceExtension``), of type ``ExtT``.
    :ivar pnp_state: the device's :class:`~airp.PnpState` when a PnP manager built its stack
        (``io.add_device``), else ``None``.  The PnP manager keeps it; drivers read it.
    :ivar device_node: the :class:`~airp.DeviceNode` the device belongs to, or ``None``.

    A device created while its driver's ``add_device`` runs starts with
    ``DO_DEVICE_INITIALIZING`` set, as ``IoCreateDevice`` sets it; the driver clears it
    (``device.flags &= ~DeviceFlags.DEVICE_INITIALIZING``) before ``add_device`` returns, or the
    PnP manager raises bug check 0xC9 / 0x243.

    :raises TypeError: if *driver* is not a Driver, *name* not a non-empty str or ``None``, or
        *device_type* or *flags* not an int.
    :raises ValueError: if *device_type* or *flags* does not fit a ULONG.
    """

    __slots__ = (
        "__weakref__",
        "_on_delete",
        "attached_device",
        "current_irp",
        "deleted",
        "device_node",
        "device_type",
        "driver",
        "extension",
        "flags",
        "lower_device",
        "name",
        "pnp_state",
        "stack_size",
        "tasks",
    )

    extension: ExtT

    @overload
    def __init__(
        self: DeviceObject[Any],
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = 0x22,
        flags: int = 0,
    ) -> None: ...

    @overload
    def __init__(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = 0x22,
        flags: int = 0,
        extension: ExtT,
    ) -> None: ...

    def __init__(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = 0x22,
        flags: int = 0,
        extension: Any = None,
    ) -> None:
        if not isinstance(driver, Driver):
            raise TypeError(f"a device needs a Driver instance, got {type(driver).__name__} {driver!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"a device name must be a non-empty str or None, got {name!r}")
        # DEVICE_TYPE and the DO_ flags are ULONGs: anything else would surface in a control
        # code or a flag test far from here.
        self.driver = driver
        self.name = name
        self.device_type = check_int("device_type", device_type, minimum=0, maximum=0xFFFF_FFFF)
        self.flags = check_int("flags", flags, minimum=0, maximum=0xFFFF_FFFF)
        if adding_device.get():
            self.flags |= DeviceFlags.DEVICE_INITIALIZING
        self.stack_size = 1
        self.lower_device: DeviceObject | None = None
        self.attached_device: DeviceObject | None = None
        self.extension = extension
        self.current_irp: Any = None
        self.deleted = False
        #: The device's task group and queues (``airp.DeviceTasks``), created on first use.
        self.tasks: Any = None
        self.pnp_state: PnpState | None = None
        self.device_node: Any = None
        # What delete_device runs: an IrpPool of the device closes itself there.
        self._on_delete: list[Callable[[], object]] | None = None
        driver.devices.append(self)

    def __repr__(self) -> str:
        """``<DeviceObject \\Device\\Name>``; an unnamed device says which stack it is in.

        Two stacks of one driver have unnamed devices that would otherwise read alike (in
        :class:`~airp.UnloadRefused`, in a bug check): an unnamed device is named by the bottom of
        its stack (its PDO, by name, else by address) and how far above it it sits, or, once
        REMOVE_DEVICE has detached it, by the stack it was in.  Only a few ``lower_device`` hops:
        cheap enough for every message.
        """
        name = self.name
        if name is not None:
            return f"<DeviceObject {name}>"
        label = f"{self.driver.name} device"
        bottom = self
        above = 0
        while bottom.lower_device is not None:
            bottom = bottom.lower_device
            above += 1
        if above:
            return f"<DeviceObject {label} {above} above {_bottom_label(bottom)}>"
        # Detached (REMOVE_DEVICE went down): the PnP manager's node still knows the stack's PDO.
        pdo = getattr(self.device_node, "pdo", None)
        if isinstance(pdo, DeviceObject) and pdo is not self:
            return f"<DeviceObject {label} detached from {_bottom_label(pdo)}'s stack>"
        if pdo is self or self.attached_device is not None:
            return f"<DeviceObject {label}, a PDO at {id(self):#x}>"
        return f"<DeviceObject {label}>"


def _bottom_label(bottom: DeviceObject) -> str:
    """How an unnamed device's repr names the bottom of its stack."""
    name = bottom.name
    return name if name is not None else f"the {bottom.driver.name} PDO at {id(bottom):#x}"


def get_attached_device(device: DeviceObject) -> DeviceObject:
    """``IoGetAttachedDevice``: the topmost device of the stack that *device* belongs to.

    :raises TypeError: if *device* is not a DeviceObject.
    """
    if not isinstance(device, DeviceObject):
        raise must_be("device", "a DeviceObject", device)
    while device.attached_device is not None:
        device = device.attached_device
    return device


def attach_device(source: DeviceObject, target: DeviceObject) -> DeviceObject:
    """``IoAttachDeviceToDeviceStack``: put *source* on top of the stack that holds *target*.

    *source* is attached to the topmost device above *target*, which may not be *target* itself;
    its ``stack_size`` becomes one more than that device's.  Send passed-down IRPs to the returned
    device (it is also stored as ``source.lower_device``).

    Departure: Windows leaves copying ``DO_BUFFERED_IO``, ``DO_DIRECT_IO``, ``DO_POWER_PAGABLE``
    and the device type to the attaching driver, and Driver Verifier flags a filter that forgets
    (0x244, 0x23F, 0x246).  airp copies them here, because every correct filter does exactly that
    and the I/O manager picks the transfer type from the top device's flags.

    :returns: the device *source* was attached to.
    :raises NtStatusError: STATUS_NO_SUCH_DEVICE if the top of the target stack is still
        initializing or has been deleted (the Safe variant's answer; Windows' plain call returns
        NULL).
    :raises ValueError: if *source* is already attached to a stack.
    :raises TypeError: if *source* or *target* is not a DeviceObject.
    """
    if not isinstance(source, DeviceObject):
        raise must_be("attach_device(source, target): source", "a DeviceObject (the device to attach)", source)
    if not isinstance(target, DeviceObject):
        raise must_be("attach_device(source, target): target", "a DeviceObject (a device of the stack to attach to)", target)
    if source.lower_device is not None:
        raise ValueError(f"{source!r} is already attached to {source.lower_device!r}; detach it first")
    top = get_attached_device(target)
    if top is source:
        raise ValueError(f"cannot attach {source!r} to its own stack")
    if top.deleted or top.flags & DeviceFlags.DEVICE_INITIALIZING:
        raise NtStatusError(STATUS_NO_SUCH_DEVICE, f"cannot attach {source!r}: {top!r} is initializing or deleted")
    top.attached_device = source
    source.lower_device = top
    source.stack_size = top.stack_size + 1
    source.flags |= top.flags & _INHERITED_FLAGS
    source.device_type = top.device_type
    return top


def detach_device(lower: DeviceObject) -> None:
    """``IoDetachDevice``: detach whatever device is attached directly above *lower*.

    :raises BugCheck: 0xC9 / 0x202 if nothing is attached to *lower*; 0xC9 / 0x241 if the
        device above has been surprise-removed and not yet sent IRP_MN_REMOVE_DEVICE (reference
        8.2: a driver detaches in REMOVE_DEVICE, never in SURPRISE_REMOVAL).
    :raises TypeError: if *lower* is not a DeviceObject.
    """
    if not isinstance(lower, DeviceObject):
        raise must_be("detach_device(lower): lower", "a DeviceObject (the device the one to detach is attached to)", lower)
    upper = lower.attached_device
    if upper is None:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            "detach_device on a device that has nothing attached above it",
            parameters=(VerifierCode.DETACH_UNATTACHED_DEVICE, lower, 0, 0),
            device=lower,
            driver=lower.driver,
        )
    if upper.pnp_state is PnpState.SURPRISE_REMOVED:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"{upper!r} was detached during surprise removal: a driver detaches its device only in"
            " IRP_MN_REMOVE_DEVICE, which follows once the last handle is closed",
            parameters=(VerifierCode.DETACH_DURING_SURPRISE_REMOVAL, upper, lower, 0),
            device=upper,
            driver=upper.driver,
        )
    lower.attached_device = None
    upper.lower_device = None


def delete_device(device: DeviceObject) -> None:
    """``IoDeleteDevice``: mark *device* deleted and let go of what it owns.

    Its :class:`~airp.IrpPool` objects are closed (idle IRPs freed; IRPs still out are freed as
    they come back).  An :class:`~airp.IoManager` drops a deleted device from its namespace the
    next time the name is looked up; :meth:`airp.IoManager.delete_device` does both at once.

    :raises BugCheck: 0xC9 / 0x240 if deleted twice; 0x242 during surprise removal (reference
        8.2: delete only in IRP_MN_REMOVE_DEVICE); 0x201 if still attached to a lower device.
    :raises TypeError: if *device* is not a DeviceObject.
    """
    if not isinstance(device, DeviceObject):
        raise must_be("delete_device(device): device", "a DeviceObject", device)
    if device.deleted:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            "a device was deleted twice",
            parameters=(VerifierCode.DELETE_DEVICE_TWICE, device, 0, 0),
            device=device,
            driver=device.driver,
        )
    # The surprise-removal rule first: it is the more specific (a driver that deletes there
    # usually has not detached either).
    if device.pnp_state is PnpState.SURPRISE_REMOVED:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"{device!r} was deleted during surprise removal: a driver deletes its device only in"
            " IRP_MN_REMOVE_DEVICE, which follows once the last handle is closed",
            parameters=(VerifierCode.DELETE_DURING_SURPRISE_REMOVAL, device, 0, 0),
            device=device,
            driver=device.driver,
        )
    if device.lower_device is not None:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"deleting {device!r} while it is still attached to {device.lower_device!r}: detach it first",
            parameters=(VerifierCode.DELETE_ATTACHED_DEVICE, device, device.lower_device, 0),
            device=device,
            driver=device.driver,
        )
    device.deleted = True
    if device in device.driver.devices:
        device.driver.devices.remove(device)
    hooks = device._on_delete
    if hooks:
        device._on_delete = None
        for hook in hooks:
            hook()

