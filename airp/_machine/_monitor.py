"""What the IRP machine and the async shell call on a monitor: the ``MonitorHooks`` protocol.

An IRP carries the hooks that watch it in ``irp._monitor``, or ``None`` when nothing watches it,
which costs :func:`~airp.call_driver` and :func:`~airp.complete_request` one ``is None`` test each.
Two kinds of watcher use the same slot: the tracing monitor (:class:`airp.IrpMonitor`) and the
opt-in Driver Verifier; :class:`HookChain` puts both on one IRP.  The lower layers name the
watcher by this protocol only, never by its class, so that they do not import the tools.

:data:`current_request` is the request a dispatch routine (or a queue's routine) of a watched IRP
is working on, so that an IRP a driver allocates meanwhile is watched by the same hooks and linked
to it as its child.  It is set only for watched IRPs: tracing off pays nothing for it.

A watcher never takes an IRP down with it.  The hooks run inside ``call_driver`` and the
completion walk, where an exception would leave the IRP half sent or half completed and nobody to
finish it.  So a tool catches what its own code (or code it was given: a logger, a predicate, a
clock) raises, and hands it to :func:`set_aside`: the tool stops watching that IRP, the failure is
kept as a :class:`MonitorHookError` and reported once through :func:`sys.unraisablehook` (a
warning under pytest), and the IRP goes on as though the tool were not there.  The only
exceptions a hook lets through are the bug checks a verifier raises on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

from ._unraisable import report_unraisable

if TYPE_CHECKING:
    from ._device import DeviceObject
    from ._irp import Irp
    from ._status import NtStatus

__all__ = [
    "HookChain",
    "MonitorHookError",
    "MonitorHooks",
    "combine_hooks",
    "current_request",
    "report_hook_error",
    "set_aside",
    "watches",
]


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


# -- a tool that fails ------------------------------------------------------------------------------


class MonitorHookError(RuntimeError):
    """A tool's hook (an :class:`~airp.IrpMonitor`'s, a :class:`~airp.Verifier`'s) raised.

    The IRP it was watching went on without the tool: the exception is kept here (as
    ``__cause__``) instead of escaping into ``call_driver`` or the completion walk, where it would
    have left the IRP for nobody to complete.

    :ivar tool: the watcher whose hook raised.
    :ivar hook: the hook's name (``"dispatching"``, ``"completed"``, ``"clock"`` ...).
    :ivar irp: the IRP it was called for (``None`` if none).
    :ivar consequence: what the tool did about it, in a sentence.
    """

    def __init__(self, tool: object, hook: str, irp: object, error: BaseException, consequence: str) -> None:
        self.tool = tool
        self.hook = hook
        self.irp = irp
        self.consequence = consequence
        about = f" for {irp!r}" if irp is not None else ""
        super().__init__(f"{type(tool).__name__}.{hook} raised {type(error).__name__}: {error}{about}; {consequence}")
        self.__cause__ = error


def report_hook_error(error: MonitorHookError) -> None:
    """Report *error* the way Python reports an exception nobody can catch: through
    :func:`sys.unraisablehook` (pytest turns it into a ``PytestUnraisableExceptionWarning``, a
    test failure under ``filterwarnings = error``), else on stderr.  Never raises."""
    report_unraisable(error, f"Exception ignored in a hook of {error.tool!r}", error.tool)


def watches(irp: Irp, hook: object) -> bool:
    """Whether *hook* is among the watchers of *irp* (``irp._monitor`` or its chain)."""
    current = irp._monitor
    if current is hook:
        return True
    return isinstance(current, HookChain) and any(h is hook for h in current.hooks)


def set_aside(irp: Irp, hook: object) -> bool:
    """Stop *hook* watching *irp*: the IRP keeps its other watchers, if any.

    Calls already under way (a ``call_driver`` or a walk that read ``irp._monitor`` before) may
    still reach *hook* once; the next ones do not.

    :returns: True if *hook* was watching *irp* (the first failure for that IRP), False if it had
        already been set aside.
    """
    current = irp._monitor
    if current is hook:
        irp._monitor = None
        return True
    if isinstance(current, HookChain) and any(h is hook for h in current.hooks):
        irp._monitor = combine_hooks(*(h for h in current.hooks if h is not hook))
        return True
    return False
