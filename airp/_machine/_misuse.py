"""Clear errors for a wrong argument, and the missing ``await`` behind the commonest one.

``[h.read_overlapped(8) for _ in range(4)]`` without ``await`` gives a list of coroutines, and a
coroutine passed where airp expects an :class:`~airp.Irp` or an :class:`~airp.Overlapped` would
otherwise fail with an ``AttributeError`` deep inside airp, or not at all.  The functions here
build the message on the error path only: nothing on a hot path calls them.

A leaf module: it imports nothing of airp, so any layer may use it.
"""

from __future__ import annotations

import inspect

__all__ = ["missing_await", "must_be", "wrong_type"]


def missing_await(got: object) -> str:
    """``""``, or a sentence to append to an error message when *got* is an un-awaited awaitable.

    Used as ``f"... got {type(x).__name__} {x!r}{missing_await(x)}"`` in an existing type-error
    branch.  A coroutine object is what calling an ``async def`` without ``await`` returns.
    """
    if inspect.iscoroutine(got):
        name = getattr(got, "__qualname__", None) or type(got).__name__
        return (
            f": a coroutine ({name}) was passed where its result was expected; the `await` is missing"
            f" (write `await {name.rsplit('.', 1)[-1]}(...)`, e.g. `[await h.read_overlapped(n) for ...]`)"
        )
    if hasattr(got, "irp") and hasattr(got, "status_returned"):
        return ": that is an Overlapped request; pass its `.irp`"
    return ""


def wrong_type(what: str, expected: str, got: object) -> TypeError:
    """``TypeError("<what> needs <expected>, got <type> <repr>[: the missing await]")``."""
    return TypeError(f"{what} needs {expected}, got {type(got).__name__} {got!r}{missing_await(got)}")


def must_be(name: str, expected: str, got: object) -> TypeError:
    """``TypeError("<name> must be <expected>, got <type> <repr>[: the missing await]")``.

    The message of a public call's argument check: the parameter, what it
    takes, what it was given.
    """
    return TypeError(f"{name} must be {expected}, got {type(got).__name__} {got!r}{missing_await(got)}")
