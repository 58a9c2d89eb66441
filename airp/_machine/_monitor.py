"""What the IRP machine and the async shell call on a monitor: the ``MonitorHooks`` protocol.

An IRP carries the hooks that watch it in ``irp._monitor``, or ``None`` when nothing watches it,
which costs :func:`~airp.call_driver` and :func:`~airp.complete_request` one ``is None`` test each.
Two kinds of watcher use the same slot: the tracing monitor (:class:`airp.IrpMonitor`) and the
opt-in Driver Verifier; :class:`HookChain` puts both on one IRP.  The lower layers name the
watcher by this protocol only, never by its class, so that they do not import the tools.

:data:`current_request` is the request a dispatch routine (or a queue's routine) of a watched IRP
is working on, so that an IRP a driver allocates meanwhile is watched by the same hooks and linked
to it as its child.  It is set only for watched IRPs: tracing off pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._device import DeviceObject
    from ._irp import Irp
    from ._status import NtStatus

__all__ = ["HookChain", "MonitorHooks", "combine_hooks", "current_request"]


class MonitorHooks(Protocol):
    """The calls a watcher receives about the IRPs it watches, in the order of an IRP's life.

    Each is called only for IRPs whose ``_monitor`` is the watcher (or a :class:`HookChain`
    holding it).  They are plain functions on the event loop's thread; none may suspend.
    """

    def watch(self, irp: Irp) -> Irp:
        """Make *irp* report to this watcher (its allocator or the I/O manager calls it)."""
        ...

    def linked(self, child: Irp, parent: Irp) -> None:
        """*child* was allocated by a driver while it worked on *parent* (already watched)."""
        ...

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        """``call_driver`` is about to await the dispatch routine of *device*."""
        ...

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        """That dispatch routine returned *status*; return what ``call_driver`` returns (a verifier
        forcing pending returns STATUS_PENDING, everyone else *status*)."""
        ...

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        """*irp* entered a StartIo queue or dispatch queue of *device* (named *queue*)."""
        ...

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        """*irp* left that queue for the driver's routine (StartIo, a queue handler, a retrieval)."""
        ...

    def completing(self, irp: Irp) -> None:
        """``complete_request`` begins the walk up from the current location."""
        ...

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        """On the way up, the completion routine of *owner*'s driver returned *result*."""
        ...

    def completed(self, irp: Irp) -> None:
        """The completion walk reached the top."""
        ...

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        """``cancel_irp`` was called: *routine* is the cancel routine it ran (``None``: none was
        set), *reason* what the canceller said (``"timeout"``, ``"handle closed"``, ...)."""
        ...

    def freed(self, irp: Irp) -> None:
        """``free_irp`` (or a pool, or the I/O manager) freed *irp*."""
        ...

    def reused(self, irp: Irp) -> None:
        """``reuse_irp`` (or a pool handing it out again) reinitialised *irp* for a new request."""
        ...


class HookChain:
    """Several watchers on one IRP: each hook is called on each of them, in order.

    ``dispatched`` threads the status through them, so a verifier that forces pending is seen
    by the watchers after it.

    :param hooks: the watchers, at least two.
    """

    __slots__ = ("hooks",)

    hooks: tuple[MonitorHooks, ...]

    def __init__(self, hooks: Sequence[MonitorHooks]) -> None:
        flat: list[MonitorHooks] = []
        for hook in hooks:
            flat.extend(hook.hooks if isinstance(hook, HookChain) else (hook,))
        self.hooks = tuple(flat)

    def watch(self, irp: Irp) -> Irp:
        for hook in self.hooks:
            hook.watch(irp)
        irp._monitor = self
        return irp

    def linked(self, child: Irp, parent: Irp) -> None:
        for hook in self.hooks:
            hook.linked(child, parent)

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        for hook in self.hooks:
            hook.dispatching(irp, device)

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        for hook in self.hooks:
            status = hook.dispatched(irp, device, status)
        return status

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        for hook in self.hooks:
            hook.queued(irp, device, queue)

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        for hook in self.hooks:
            hook.dequeued(irp, device, queue)

    def completing(self, irp: Irp) -> None:
        for hook in self.hooks:
            hook.completing(irp)

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        for hook in self.hooks:
            hook.routine_ran(irp, owner, routine, result)

    def completed(self, irp: Irp) -> None:
        for hook in self.hooks:
            hook.completed(irp)

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        for hook in self.hooks:
            hook.cancelled(irp, routine, reason)

    def freed(self, irp: Irp) -> None:
        for hook in self.hooks:
            hook.freed(irp)

    def reused(self, irp: Irp) -> None:
        for hook in self.hooks:
            hook.reused(irp)

    def __repr__(self) -> str:
        return f"<HookChain {list(self.hooks)!r}>"


def combine_hooks(*hooks: MonitorHooks | None) -> MonitorHooks | None:
    """The watcher for several optional ones: ``None``, the one given, or a :class:`HookChain`."""
    present = [hook for hook in hooks if hook is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return HookChain(present)


#: The watched request a dispatch routine, StartIo routine or queue handler is working on now.
current_request: ContextVar[Irp | None] = ContextVar("airp_current_request", default=None)
