"""pytest plugin for airp (entry point ``pytest11: airp``).

It never overrides ``anyio_backend`` itself (that fixture belongs to the suite's ``conftest.py``);
it provides:

``airp_anyio_backend``
    parametrized over ``asyncio`` and ``trio``; each test gets a fresh virtual clock. Opt a suite in
    with ``def anyio_backend(airp_anyio_backend): return airp_anyio_backend`` in ``conftest.py``.
``virtual_clock``
    the clock of the current test's ``anyio_backend`` (``.now()``, ``.current_time``,
    ``.jump(seconds)``); the test fails with a clear message if that backend has no virtual clock.

``airp_verifier``
    a fresh :class:`airp.Verifier` for the test; give it to the test's I/O manager
    (``airp.IoManager(verifier=airp_verifier)``).  At teardown the test fails with the verifier's
    report if it found a violation, if an IRP is still outstanding, or if a completion it
    deferred raised.  Configure it with the marker
    ``@pytest.mark.airp_verifier(force_pending=..., seed=..., drivers=[...], ...)``, whose keyword
    arguments are :class:`airp.Verifier`'s (its default ``raise_on_violation=True`` raises each
    violation where it happens as well).  A marker's ``low_resources=`` simulation is copied
    afresh for every run of the test (each backend, each parametrization): the object in the
    marker is built once, at import, and would otherwise reach the second run with its sites
    already failed; read the run's own through ``airp_verifier.low_resources``.

and one ini option:

``airp_cancel_wait_limit``
    seconds (or ``none`` for no limit) that every run of the session starts with as its
    cancel-wait limit, instead of Windows' 300 s: ``airp_cancel_wait_limit = 30`` in the
    ``[pytest]`` / ``[tool.pytest.ini_options]`` section.  ``airp.set_cancel_wait_limit`` inside a
    test and ``IoManager(cancel_wait_limit=...)`` still win over it (precedence in
    ``airp.set_cancel_wait_limit``).

It also keeps one failing test from failing the next ones.  anyio's pytest plugin keeps one test
runner across tests and forgets it once the last async fixture or test using it is done, after
closing it; when that close raises (a :class:`~airp.VirtualTimeDeadlock` while the asyncio runner
cancels the tasks a test left behind or finalizes its async generators), anyio never forgets
the closed runner, and every later test, on either backend, would fail with "Runner is closed".
After each test phase the plugin drops such a runner (see :func:`_discard_closed_anyio_runner`),
so the deadlock fails the test that caused it and the next test gets a new runner.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from .._machine._allocation import LowResourcesSimulation
from .._shell._asyncio_clock import AsyncioVirtualClock
from .._shell._requester_cancel import _set_configured_cancel_wait_limit
from .._shell._run_clock import clock_of, virtual_anyio_backend
from .._shell._trio_clock import TrioVirtualClock
from .._tools._verifier import Verifier

_INI_LIMIT = "airp_cancel_wait_limit"
_previous_limit: list[float] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _INI_LIMIT,
        "airp: the cancel-wait limit (seconds, or 'none') every run starts with, instead of 300 s",
        default=None,
    )


def _parse_limit(raw: str) -> float | None:
    text = raw.strip()
    if text.lower() in ("none", "inf", "infinity"):
        return None
    try:
        return float(text)
    except ValueError:
        raise pytest.UsageError(
            f"{_INI_LIMIT} = {raw!r}: expected a number of seconds >= 0, or 'none' for no limit"
        ) from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "airp_verifier(**options): the airp.Verifier options (force_pending, seed, drivers, checks,"
        " low_resources, raise_on_violation) of the test's airp_verifier fixture",
    )
    raw = config.getini(_INI_LIMIT)
    if raw is None or raw == "" or raw == []:
        return
    seconds = _parse_limit(str(raw))
    try:
        _previous_limit.append(_set_configured_cancel_wait_limit(seconds))
    except (TypeError, ValueError) as error:
        raise pytest.UsageError(f"{_INI_LIMIT} = {raw!r}: {error}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    if _previous_limit:
        _set_configured_cancel_wait_limit(_previous_limit.pop())


def _discard_closed_anyio_runner() -> bool:
    """Forget the test runner anyio's pytest plugin failed to forget because closing it raised.

    ``anyio.pytest_plugin.get_runner`` closes its runner when the last lease on it ends and then
    sets its module's ``_current_runner`` and ``_runner_stack`` to ``None``; but when the close
    raises, the assignment is skipped, and the next test (asyncio or trio: the runner is shared)
    is handed the closed runner and fails with ``RuntimeError: Runner is closed``.  Between two
    test phases no lease is held, so a runner that is still recorded then is that closed one: its
    close has run to its end (an ``ExitStack`` runs every callback even when one raises), and only
    the assignment is missing, which this does.  The runner's request stream is closed too, so
    that its ``__del__`` has nothing to warn about in some later test.

    A no-op when anyio's plugin is not loaded or keeps its state otherwise (another version).

    :returns: True if a closed runner was dropped.
    """
    import contextlib
    import sys

    anyio_plugin: Any = sys.modules.get("anyio.pytest_plugin")
    if anyio_plugin is None:
        return False
    runner = getattr(anyio_plugin, "_current_runner", None)
    if runner is None or getattr(anyio_plugin, "_runner_leases", None) != 0:
        return False
    send_stream = getattr(runner, "_send_stream", None)
    close = getattr(send_stream, "close", None)
    if close is not None:
        # Already closed, or the loop it belonged to is gone: nothing more to do.
        with contextlib.suppress(Exception):
            close()
    anyio_plugin._current_runner = None
    anyio_plugin._runner_stack = None
    return True


def _after_phase() -> None:
    if _discard_closed_anyio_runner():
        import gc

        # What the dropped runner still held (tasks of its closed loop, their coroutines) is
        # collected now, right after the failing phase, rather than whenever the collector next
        # runs in some later test: what its finalizers report comes out next to the failure.
        gc.collect()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        _after_phase()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        _after_phase()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    __tracebackhide__ = True
    try:
        return (yield)
    finally:
        _after_phase()


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


@pytest.fixture
def airp_verifier(request: pytest.FixtureRequest) -> Iterator[Verifier]:
    """A :class:`airp.Verifier` for this test, configured by its ``airp_verifier`` marker; the test
    fails at teardown with the verifier's report on any violation or outstanding IRP.

    Each run of the test gets its own verifier and its own copy of the marker's
    ``low_resources`` simulation, in its initial state.
    """
    marker = request.node.get_closest_marker("airp_verifier")
    options: dict[str, Any] = {}
    if marker is not None:
        if marker.args:
            pytest.fail(
                f"@pytest.mark.airp_verifier takes keyword arguments only (Verifier's options), got {marker.args!r}",
                pytrace=False,
            )
        options = dict(marker.kwargs)
    simulation = options.get("low_resources")
    if isinstance(simulation, LowResourcesSimulation):
        # The marker's object is shared by every run of the test (both backends): each run gets
        # a copy in its initial state (same fraction, seed and mode; no sites, no failures).
        fresh = copy.deepcopy(simulation)
        fresh.reset()
        options["low_resources"] = fresh
    try:
        verifier = Verifier(**options)
    except TypeError as error:
        pytest.fail(f"@pytest.mark.airp_verifier{options!r}: {error}", pytrace=False)
    yield verifier
    report: str | None = None
    try:
        verifier.check()
    except AssertionError as failed:
        report = str(failed)
    if report is not None:
        pytest.fail(report, pytrace=False)
