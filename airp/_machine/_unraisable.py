"""Reporting an exception nobody can catch, as Python reports one: through :func:`sys.unraisablehook`.

Code that runs inside the synchronous completion walk on behalf of a tool or a requester (a
monitor's hook, a done callback) must never take the IRP down with it, so its exceptions are not
raised there; they are reported this way.  pytest turns such a report into a
``PytestUnraisableExceptionWarning``, a test failure under ``filterwarnings = error``.
"""

from __future__ import annotations

import sys
import traceback

__all__ = ["report_unraisable"]


class _UnraisableReport:
    """The attributes of ``sys.UnraisableHookArgs``, whose type the standard library does not let
    Python code build: hooks written in Python (pytest's, a test's) read these attributes."""

    __slots__ = ("err_msg", "exc_traceback", "exc_type", "exc_value", "object")

    def __init__(self, error: BaseException, err_msg: str, culprit: object) -> None:
        self.exc_type = type(error)
        self.exc_value: BaseException | None = error
        self.exc_traceback = error.__traceback__
        self.err_msg: str | None = err_msg
        self.object = culprit


def report_unraisable(error: BaseException, message: str, culprit: object) -> None:
    """Hand *error* to :func:`sys.unraisablehook` with *message* ("Exception ignored in ...") and
    the object it came from; with the default hook, write what it would to stderr.  Never raises."""
    report = _UnraisableReport(error, message, culprit)
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        try:
            hook(report)
            return
        except Exception:
            pass  # as CPython does for a hook that fails: the default report instead
    # The default hook accepts only its own argument type: write what it would.
    try:
        try:
            shown = repr(culprit)
        except Exception:
            shown = f"<object repr() failed at {id(culprit):#x}>"
        print(f"{message}: {shown}", file=sys.stderr)
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    except Exception:
        pass  # stderr itself is gone: nothing more to do
