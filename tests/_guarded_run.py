"""Running a whole anyio run under a hang guard, for tests of what a run does when it is stuck.

A test that expects a run to end (with a result or with ``VirtualTimeDeadlock``) must fail, not
hang, if the clock fails to see the deadlock: the run goes in a daemon thread, joined with a
timeout.  That is a guard against hangs, not a measure of duration: the runs take milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from airp.testing import virtual_clock_for

#: Real seconds a run may take before the guard calls it a hang.
HANG_GUARD = 30.0


def run_guarded(backend: str, main: Callable[[], Awaitable[Any]], **clock_options: Any) -> Any:
    """``anyio.run(main)`` on a fresh virtual clock, in a daemon thread joined with a timeout.

    The run's result is returned and its exception re-raised here; a run still going after
    :data:`HANG_GUARD` real seconds fails the test.
    """
    name, options = virtual_clock_for(backend, **clock_options).anyio_backend()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = anyio.run(main, backend=name, backend_options=options)
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"guarded {backend} run", daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    if thread.is_alive():
        pytest.fail(
            f"the {backend} run was still going after {HANG_GUARD} s of real time: it hangs (a loop that spins"
            " or blocks) instead of ending as promised",
            pytrace=False,
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
