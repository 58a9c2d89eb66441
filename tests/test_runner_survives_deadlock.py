"""A deadlock while anyio's asyncio test runner shuts down fails one test, not the rest.

anyio's pytest plugin keeps one test runner across tests and closes it when the last test or
async fixture using it is done.  Closing the asyncio runner cancels the tasks the test left and
finalizes its async generators; on airp's virtual loop, one that can never finish there is a
:class:`~airp.testing.VirtualTimeDeadlock`.  That deadlock must fail the test that caused it, and
the next tests, asyncio or trio, must get a runner of their own rather than "Runner is closed".

The session under test runs in this process (pytester's inline run), whose anyio plugin module
it shares: without the fix, the closed runner would go on to fail this session's next tests too.
"""

from __future__ import annotations

import pytest

CONFTEST = """
import pytest

@pytest.fixture
def anyio_backend(airp_anyio_backend):
    return airp_anyio_backend
"""

SESSION = """
import anyio
import pytest
from airp.testing import virtual_anyio_backend

pytestmark = pytest.mark.anyio


async def stuck_in_finally():
    try:
        yield 1
    finally:
        await anyio.Event().wait()   # nothing ever sets it


LEFT_OPEN = []


@pytest.mark.parametrize("anyio_backend", [virtual_anyio_backend("asyncio")], ids=["asyncio"])
async def test_culprit_leaves_an_async_generator(anyio_backend):
    generator = stuck_in_finally()
    await generator.__anext__()
    LEFT_OPEN.append(generator)      # finalized when the runner closes: it deadlocks there


async def test_after_the_culprit():
    await anyio.sleep(1)


@pytest.fixture
async def leaves_a_generator():
    yield
    generator = stuck_in_finally()
    await generator.__anext__()
    LEFT_OPEN.append(generator)


@pytest.mark.parametrize("anyio_backend", [virtual_anyio_backend("asyncio")], ids=["asyncio"])
async def test_culprit_fixture_teardown(anyio_backend, leaves_a_generator):
    pass


async def test_after_the_fixture_culprit():
    await anyio.sleep(1)


def test_sync_after_it_all():
    pass
"""


def test_a_deadlock_at_runner_shutdown_fails_only_its_own_test(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-rA")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    # The call of the first culprit fails, and the teardown of the second: each its own.
    result.assert_outcomes(passed=6, failed=1, errors=1)
    result.stdout.fnmatch_lines(["FAILED test_session.py::test_culprit_leaves_an_async_generator[[]asyncio[]]*"])
    result.stdout.fnmatch_lines(["ERROR test_session.py::test_culprit_fixture_teardown[[]asyncio[]]*"])
    result.stdout.fnmatch_lines(["E *VirtualTimeDeadlock: deadlock on virtual time*"])
    for follower in ("test_after_the_culprit[asyncio]", "test_after_the_culprit[trio]", "test_after_the_fixture_culprit[trio]"):
        result.stdout.fnmatch_lines([f"PASSED test_session.py::{follower.replace('[', '[[]')}"])
    result.stdout.no_fnmatch_line("*Runner is closed*")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
