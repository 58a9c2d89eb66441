"""Test support for airp users: virtual clocks for asyncio and trio, quiescence, pytest fixtures.

See ``docs/testing.md``. The clocks live in the async shell (``airp._shell``), with one module per
backend; this package re-exports them.  The pytest plugin (:mod:`airp.testing._plugin`) is
registered through the ``pytest11`` entry point and provides the ``virtual_clock``,
``airp_anyio_backend`` and ``airp_verifier`` fixtures.
"""

from __future__ import annotations

from .._shell._asyncio_clock import AsyncioVirtualClock as AsyncioVirtualClock
from .._shell._asyncio_clock import VirtualTimeEventLoop as VirtualTimeEventLoop
from .._shell._run_clock import clock_of as clock_of
from .._shell._run_clock import virtual_anyio_backend as virtual_anyio_backend
from .._shell._run_clock import virtual_clock_for as virtual_clock_for
from .._shell._trio_clock import TrioVirtualClock as TrioVirtualClock
from .._shell._virtual_time import DeadlockFindings as DeadlockFindings
from .._shell._virtual_time import VirtualClock as VirtualClock
from .._shell._virtual_time import VirtualTimeDeadlock as VirtualTimeDeadlock
from ._quiet import wait_until_quiet as wait_until_quiet

__all__ = [
    "AsyncioVirtualClock",
    "DeadlockFindings",
    "TrioVirtualClock",
    "VirtualClock",
    "VirtualTimeDeadlock",
    "VirtualTimeEventLoop",
    "clock_of",
    "virtual_anyio_backend",
    "virtual_clock_for",
    "wait_until_quiet",
]
