"""Checking a public call's arguments where they are given.

A wrong argument that goes in unchecked comes out later as an ``AttributeError`` deep inside
airp, or not at all until the first request (``IoManager(monitor="x")`` failed at the first open;
``run_device(device, on_error="x")`` at the first routine failure).  The functions here refuse it
at the boundary with a :class:`TypeError` or :class:`ValueError` that names the parameter, says
what was expected and what was given::

    on_error must be a plain function (failure) -> None, or None; got str 'x'

They are meant for constructors and calls that are not on a request's path.  A per-request path
(``call_driver``, ``complete_request``, ``FileHandle.read``) checks with one ``type() is`` /
``isinstance`` test inline and calls :func:`must_be` only on the error path.
``tests/test_public_arguments.py`` calls every public callable with ill-typed arguments and keeps
it so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._irp import _not_plain_function
from ._misuse import missing_await, must_be

if TYPE_CHECKING:
    from ._monitor import MonitorHooks

__all__ = [
    "check_coroutine_function",
    "check_hooks",
    "check_int",
    "check_plain_function",
    "check_seconds",
    "must_be",
]

#: The hooks of :class:`~airp._machine._monitor.MonitorHooks`, which a watcher must all have.
HOOK_NAMES = (
    "watch",
    "linked",
    "dispatching",
    "dispatched",
    "queued",
    "dequeued",
    "completing",
    "routine_ran",
    "completed",
    "cancelled",
    "freed",
    "reused",
)


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """*value* as an int (an ``IntEnum`` member too, never a bool), within the bounds given.

    :raises TypeError: if *value* is not an int.
    :raises ValueError: if it is out of bounds.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise must_be(name, "an int", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bounds = f">= {minimum}"
        elif minimum is None:
            bounds = f"<= {maximum:#x}" if maximum > 0xFFFF else f"<= {maximum}"
        else:
            bounds = f"in {minimum}..{maximum:#x}" if maximum > 0xFFFF else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return int(value)


def check_seconds(name: str, value: object, *, optional: bool = False) -> float | None:
    """*value* as a number of seconds >= 0 (``math.inf`` allowed; ``None`` too if *optional*).

    :raises TypeError: if *value* is not an int or a float (a bool is not a number of seconds).
    :raises ValueError: for a negative number or NaN.
    """
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        expected = "a number of seconds or None" if optional else "a number of seconds"
        raise must_be(name, expected, value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def check_plain_function(name: str, value: object, *, signature: str, optional: bool = True, why: str = "") -> None:
    """Refuse *value* unless it is a plain function (or ``None`` if *optional*).

    A callback airp calls synchronously (a hook, a notification, a clock) must run to its end
    when called: a coroutine function would only make a coroutine nobody awaits.

    :param signature: how it is called, for the message: ``"(failure) -> None"``.
    :param why: a clause saying why it must be plain, appended in parentheses.
    :raises TypeError: naming *name* and what was given.
    """
    if value is None and optional:
        return
    problem = _not_plain_function(value)
    if problem is not None:
        either = ", or None" if optional else ""
        because = f" ({why})" if why else ""
        raise TypeError(f"{name} must be a function {signature} that runs to its end (a plain def, not async){either}; {problem}{because}")


def check_coroutine_function(name: str, value: object, *, signature: str) -> None:
    """Refuse *value* unless it is an ``async def`` function (what airp awaits).

    :raises TypeError: naming *name* and what was given.
    """
    import inspect  # only on this path: constructors, not requests

    if not callable(value) or not inspect.iscoroutinefunction(value):
        raise must_be(name, f"an async def {signature} coroutine function", value)


def check_hooks(name: str, value: object) -> MonitorHooks | None:
    """Refuse *value* unless it is ``None`` or a watcher with every hook a monitor receives.

    :class:`~airp.IrpMonitor` and :class:`~airp.Verifier` are such watchers.  Anything else
    would fail at the first IRP it is given, inside ``call_driver`` or the completion walk.

    :raises TypeError: naming *name*, what was given, and the hooks it lacks.
    """
    if value is None:
        return None
    if isinstance(value, type):
        raise TypeError(
            f"{name} must be a monitor object (an IrpMonitor, a Verifier) or None, got the class {value.__name__}:"
            f" pass an instance, {value.__name__}()"
        )
    missing = [hook for hook in HOOK_NAMES if not callable(getattr(value, hook, None))]
    if missing:
        raise TypeError(
            f"{name} must be a monitor (an IrpMonitor, a Verifier, or an object with the MonitorHooks"
            f" methods) or None, got {type(value).__name__} {value!r}{missing_await(value)}, which has no"
            f" {', '.join(missing)}"
        )
    return value  # type: ignore[return-value]
