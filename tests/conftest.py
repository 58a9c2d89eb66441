"""Every async test runs on asyncio and on trio, each on a fresh virtual clock.

``airp_anyio_backend`` and ``virtual_clock`` come from airp's pytest plugin (``airp.testing``),
which is registered through the ``pytest11`` entry point; the clock is built inside the fixture
body, so no virtual time leaks from one test into the next.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def anyio_backend(airp_anyio_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    return airp_anyio_backend
