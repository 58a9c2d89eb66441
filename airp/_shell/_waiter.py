"""The one-shot, level-triggered waiter an IRP's requester (and a StartIo worker) sleeps on.

It keeps ``anyio.Event``'s semantics where airp uses them: :meth:`set` is called synchronously by
the machine's completion walk (it never suspends and may be called again); once set it stays set
(:meth:`is_set`); any number of tasks may wait; a wait is cancellable by the waiting task's cancel
scope exactly as ``Event.wait`` is, and a wait on a waiter already set is a checkpoint.

It costs less than ``anyio.Event``, which is on every pended wake-up (issue 11): no backend
look-up through sniffio when made (the running asyncio loop, a C call, tells the backends apart),
and no coroutine frames of anyio's wrapper and the backend's event between the waiter and the
event loop.  ``waiter._wait()`` is a generator, so ``await irp`` drives it with ``yield from``:

* on asyncio each waiting task parks on a future of its own (a task's cancellation cancels the
  future it awaits, so one shared future would be cancelled for every waiter);
* on trio each waiting task parks with ``trio.lowlevel.wait_task_rescheduled`` and an abort
  function that takes it off the waiter, as ``trio.Event`` does through its parking lot.
"""

from __future__ import annotations

import sys
import types
from asyncio import AbstractEventLoop, Future
from asyncio import _get_running_loop as _running_loop
from collections.abc import Awaitable, Callable, Generator
from typing import Any, ClassVar

import anyio.lowlevel

__all__ = ["Waiter", "new_waiter"]


class Waiter:
    """What :func:`new_waiter` returns: ``set()``, ``is_set()`` and ``await waiter.wait()``."""

    __slots__ = ("_parked", "_set")

    def __init__(self) -> None:
        self._set = False
        self._parked: list[Any] = []

    def is_set(self) -> bool:
        """True once :meth:`set` has been called."""
        return self._set

    def set(self) -> None:
        """Wake every task waiting, and every later one at once; idempotent, never suspends."""
        raise NotImplementedError

    def _wait(self) -> Generator[Any, None, None]:
        raise NotImplementedError
        yield  # pragma: no cover

    #: ``await waiter.wait()``: wait until :meth:`set` is called (a checkpoint if it already was).
    #: On cancellation: the wait ends with the cancellation exception and the task is no longer
    #: parked on the waiter; the waiter is unchanged.  (Each backend's ``_wait`` generator, flagged
    #: with :func:`types.coroutine` so that coroutines can await it.)
    wait: ClassVar[Callable[[Waiter], Awaitable[None]]]


def _set_checkpoint() -> Generator[Any, None, None]:
    # anyio.Event.wait on an event already set: a checkpoint.
    yield from anyio.lowlevel.checkpoint().__await__()


class _AsyncioWaiter(Waiter):
    __slots__ = ("_loop",)

    def __init__(self, loop: AbstractEventLoop) -> None:
        self._set = False
        self._parked = []
        self._loop = loop

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        parked = self._parked
        if parked:
            for future in parked:
                if not future.done():
                    future.set_result(None)

    def _wait(self) -> Generator[Any, None, None]:
        if self._set:
            yield from _set_checkpoint()
            return
        future: Future[None] = self._loop.create_future()
        parked = self._parked
        parked.append(future)
        try:
            yield from future
        finally:
            parked.remove(future)

    wait = types.coroutine(_wait)


_trio_lowlevel: Any = None


class _TrioWaiter(Waiter):
    __slots__ = ()

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        parked = self._parked
        if parked:
            reschedule = _trio_lowlevel.reschedule
            for task in parked:
                reschedule(task)
            parked.clear()

    def _wait(self) -> Generator[Any, None, None]:
        if self._set:
            yield from _set_checkpoint()
            return
        lowlevel = _trio_lowlevel
        task = lowlevel.current_task()
        parked = self._parked
        parked.append(task)

        def abort(raise_cancel: object) -> object:
            parked.remove(task)
            return lowlevel.Abort.SUCCEEDED

        yield from lowlevel.wait_task_rescheduled(abort).__await__()

    wait = types.coroutine(_wait)


def new_waiter() -> Waiter:
    """A waiter for the running event loop (asyncio or trio); call it inside the run."""
    loop = _running_loop()
    if loop is not None:
        return _AsyncioWaiter(loop)
    global _trio_lowlevel
    if _trio_lowlevel is None:
        # Not an import: a trio run has imported trio already, and airp does not depend on it.
        _trio_lowlevel = sys.modules.get("trio.lowlevel")
        if _trio_lowlevel is None:
            raise RuntimeError("airp waits only inside an asyncio or trio run")
    return _TrioWaiter()

