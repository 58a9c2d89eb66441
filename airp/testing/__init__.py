"""Test support for airp users: virtual clocks for asyncio and trio, quiescence, pytest fixtures.

See ``docs/testing.md``. The pytest plugin (:mod:`airp.testing._plugin`) is registered through the
``pytest11`` entry point and provides the ``virtual_clock`` and ``airp_anyio_backend`` fixtures.
"""

from __future__ import annotations

from ._clock import AsyncioVirtualClock as AsyncioVirtualClock
from ._clock import TrioVirtualClock as TrioVirtualClock
from ._clock import VirtualClock as VirtualClock
from ._clock import VirtualTimeDeadlock as VirtualTimeDeadlock
from ._clock import VirtualTimeEventLoop as VirtualTimeEventLoop
from ._clock import clock_of as clock_of
from ._clock import virtual_anyio_backend as virtual_anyio_backend
from ._clock import virtual_clock_for as virtual_clock_for
from ._quiet import wait_until_quiet as wait_until_quiet
