"""pytest plugin for airp (entry point ``pytest11: airp``).

It never overrides ``anyio_backend`` itself (that fixture belongs to the suite's ``conftest.py``);
it provides:

``airp_anyio_backend``
    parametrized over ``asyncio`` and ``trio``; each test gets a fresh virtual clock. Opt a suite in
    with ``def anyio_backend(airp_anyio_backend): return airp_anyio_backend`` in ``conftest.py``.
``virtual_clock``
    the clock of the current test's ``anyio_backend`` (``.now()``, ``.current_time``,
    ``.jump(seconds)``); the test fails with a clear message if that backend has no virtual clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from ._clock import AsyncioVirtualClock, TrioVirtualClock, clock_of, virtual_anyio_backend


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def airp_anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """``(backend_name, backend_options)`` on a fresh virtual clock, once per backend."""
    name: str = request.param
    return virtual_anyio_backend(name)


@pytest.fixture
def virtual_clock(anyio_backend: object) -> AsyncioVirtualClock | TrioVirtualClock:
    """The virtual clock the current test runs on."""
    clock = clock_of(anyio_backend)
    if clock is None:
        pytest.fail(
            f"virtual_clock: the anyio_backend fixture ({anyio_backend!r}) has no airp virtual clock; "
            "define `anyio_backend` in conftest.py as `return airp_anyio_backend` "
            "(or `airp.testing.virtual_anyio_backend(name)`)",
            pytrace=False,
        )
    return clock
