"""airp.testing: the virtual clocks, the pytest fixtures and the quiescence helper."""

from __future__ import annotations

import math

import anyio
import pytest

from airp.testing import (
    AsyncioVirtualClock,
    TrioVirtualClock,
    VirtualClock,
    clock_of,
    virtual_anyio_backend,
    virtual_clock_for,
    wait_until_quiet,
)

pytestmark = pytest.mark.anyio


async def test_fresh_clock_starts_at_zero(virtual_clock: VirtualClock) -> None:
    assert virtual_clock.now() == 0.0
    assert anyio.current_time() == 0.0


async def test_an_hour_of_sleep_is_virtual(virtual_clock: VirtualClock) -> None:
    await anyio.sleep(3600)
    assert virtual_clock.now() == pytest.approx(3600)
    assert virtual_clock.current_time == pytest.approx(3600)
    assert anyio.current_time() == pytest.approx(3600)


async def test_second_test_gets_a_fresh_clock(virtual_clock: VirtualClock) -> None:
    # Would be >= 3600 if the previous test's clock leaked.
    assert virtual_clock.now() == 0.0


async def test_manual_jump_fires_due_timers(virtual_clock: VirtualClock) -> None:
    fired: list[float] = []

    async def sleeper() -> None:
        await anyio.sleep(10)
        fired.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await wait_until_quiet()
        assert fired == []
        virtual_clock.jump(10)
        assert virtual_clock.now() == pytest.approx(10)
        await wait_until_quiet()
        assert fired == [pytest.approx(10)]


async def test_timers_fire_in_order(virtual_clock: VirtualClock) -> None:
    order: list[tuple[int, float]] = []

    async def sleeper(n: int) -> None:
        await anyio.sleep(n)
        order.append((n, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(sleeper, n)
    assert [n for n, _ in order] == [1, 2, 3]
    assert [t for _, t in order] == [pytest.approx(1), pytest.approx(2), pytest.approx(3)]


async def test_fail_after_is_virtual(virtual_clock: VirtualClock) -> None:
    with pytest.raises(TimeoutError):
        with anyio.fail_after(5):
            await anyio.Event().wait()
    assert virtual_clock.now() == pytest.approx(5)


async def test_wait_until_quiet_does_not_move_time(virtual_clock: VirtualClock) -> None:
    progress: list[int] = []

    async def worker() -> None:
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            progress.append(i)
        await anyio.sleep(100)
        progress.append(99)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await wait_until_quiet()
        assert progress == [0, 1, 2, 3, 4]
        assert virtual_clock.now() == 0.0
        await wait_until_quiet()
        assert virtual_clock.now() == 0.0
    assert progress[-1] == 99
    assert virtual_clock.now() == pytest.approx(100)


async def test_negative_or_nan_jump_is_refused(virtual_clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="forwards"):
        virtual_clock.jump(-1)
    with pytest.raises(ValueError, match="forwards"):
        virtual_clock.jump(math.nan)
    assert virtual_clock.now() == 0.0


async def test_worker_thread_result_is_seen(virtual_clock: VirtualClock) -> None:
    # A worker thread: the loop blocks for real I/O wake-ups (no timer pending).
    result = await anyio.to_thread.run_sync(lambda: 41 + 1)
    assert result == 42


def test_virtual_anyio_backend_runs_outside_pytest() -> None:
    for name in ("asyncio", "trio"):
        backend, options = virtual_anyio_backend(name)
        clock = clock_of((backend, options))
        assert clock is not None

        async def main() -> float:
            await anyio.sleep(86_400 * 7)
            return anyio.current_time()

        assert anyio.run(main, backend=backend, backend_options=options) == pytest.approx(86_400 * 7)
        assert clock.now() == pytest.approx(86_400 * 7)


def test_clock_of_rejects_non_virtual_backends() -> None:
    assert clock_of("asyncio") is None
    assert clock_of(("asyncio", {})) is None
    assert clock_of(("trio", {})) is None
    assert clock_of(("curio", {"clock": object()})) is None


def test_virtual_clock_for_unknown_backend() -> None:
    with pytest.raises(ValueError, match="curio"):
        virtual_clock_for("curio")
    assert isinstance(virtual_clock_for("asyncio"), AsyncioVirtualClock)
    assert isinstance(virtual_clock_for("trio"), TrioVirtualClock)


def test_asyncio_clock_without_autojump_moves_by_hand_only() -> None:
    clock = AsyncioVirtualClock(autojump=False)

    async def main() -> None:
        async def jumper() -> None:
            await wait_until_quiet()
            clock.jump(30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(jumper)
            await anyio.sleep(30)

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": clock.make_loop})
    assert clock.now() == pytest.approx(30)


def test_plugin_in_a_user_suite(pytester: pytest.Pytester) -> None:
    """A user's suite opts in with one fixture in conftest.py; every test runs on both backends."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def anyio_backend(airp_anyio_backend):
            return airp_anyio_backend
        """
    )
    pytester.makepyfile(
        """
        import anyio
        import pytest

        @pytest.mark.anyio
        async def test_timeout(virtual_clock):
            with pytest.raises(TimeoutError):
                with anyio.fail_after(60):
                    await anyio.sleep(3600)
            assert virtual_clock.now() == pytest.approx(60)

        @pytest.mark.anyio
        async def test_fresh(virtual_clock):
            assert virtual_clock.now() == 0.0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_virtual_clock_without_virtual_backend_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.anyio
        async def test_needs_clock(virtual_clock):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1
    assert "passed" not in outcomes
    result.stdout.fnmatch_lines(["*has no airp virtual clock*"])
