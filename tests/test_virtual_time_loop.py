"""airp's virtual time keeps its promises: asyncio's event loop of airp's own and the
trio clock.

Each run ends as promised, with an error or with its result, under a hang guard: the run goes in
a daemon thread joined with a timeout, so that a loop that spins or blocks fails the test instead
of hanging the suite.  The promises: a run nothing can wake is a :class:`VirtualTimeDeadlock`;
time has no cliff at 2**24 s nor at 10**12 s; a worker thread in flight is never overtaken by a
jump; real sockets work on virtual time; a loop with no file descriptor to watch makes no system
call per pass (asyncio); timers due at the same instant fire in the order they were set;
``wait_until_quiet`` does not move time while ``airp.delay`` sleepers are parked.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from _guarded_run import run_guarded

import airp
from airp.testing import VirtualTimeDeadlock, VirtualTimeEventLoop, wait_until_quiet

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])



# -- 1. a run that nothing can wake is a deadlock ----------------------------------------------------


async def _sleep_forever() -> None:
    await anyio.sleep_forever()


async def _wait_for_an_event_nobody_sets() -> None:
    await anyio.Event().wait()


async def _delay_forever() -> None:
    await airp.delay(math.inf)


FOREVER = pytest.mark.parametrize(
    "forever",
    [
        pytest.param(_sleep_forever, id="sleep_forever"),
        pytest.param(_wait_for_an_event_nobody_sets, id="event"),
        pytest.param(_delay_forever, id="delay-inf"),
    ],
)


@BACKENDS
@FOREVER
def test_a_lone_task_waiting_forever_is_a_deadlock(backend: str, forever: Callable[[], Awaitable[None]]) -> None:
    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, forever)
    error = caught.value
    assert error.now == 0.0
    assert error.outstanding == []
    assert error.queued == []
    assert error.remove_locks == []
    message = str(error)
    assert message.startswith("deadlock on virtual time at t=0.0")
    assert "no request is outstanding" in message


@BACKENDS
@FOREVER
def test_waiting_forever_after_time_moved_is_a_deadlock_at_that_time(
    backend: str, forever: Callable[[], Awaitable[None]]
) -> None:
    async def main() -> None:
        await anyio.sleep(3)
        await airp.delay(4)
        await forever()

    with pytest.raises(VirtualTimeDeadlock) as caught:
        run_guarded(backend, main)
    assert caught.value.now == 7.0
    assert "at t=7.0" in str(caught.value)


# -- 2. no cliff at 2**24 s, nor at 10**12 s ---------------------------------------------------------

STEP = 5_700_000  # three of them end at 17_100_000 s, past 2**24 = 16_777_216 s


@BACKENDS
@pytest.mark.parametrize("sleep", [pytest.param(anyio.sleep, id="anyio.sleep"), pytest.param(airp.delay, id="delay")])
def test_a_run_past_two_to_the_24_seconds(backend: str, sleep: Callable[[float], Awaitable[None]]) -> None:
    async def main() -> tuple[list[float], list[float]]:
        big = []
        for _ in range(3):
            await sleep(STEP)
            big.append(anyio.current_time())
        # Past 2**24 s, a short sleep must still come due (asyncio's own loop spins here: its
        # "due" test adds a clock resolution that the float can no longer hold).
        small = []
        for _ in range(5):
            await sleep(0.001)
            small.append(anyio.current_time())
        return big, small

    big, small = run_guarded(backend, main)
    assert big == [5_700_000.0, 11_400_000.0, 17_100_000.0]  # exact sums, no drift
    assert 17_100_000.0 > 2**24
    assert small == sorted(small)
    assert small[0] > 17_100_000.0
    assert small[-1] == pytest.approx(17_100_000.005, abs=1e-6)


@BACKENDS
@pytest.mark.parametrize("sleep", [pytest.param(anyio.sleep, id="anyio.sleep"), pytest.param(airp.delay, id="delay")])
def test_a_run_to_ten_to_the_12_seconds(backend: str, sleep: Callable[[float], Awaitable[None]]) -> None:
    async def main() -> list[float]:
        seen = []
        for seconds in (1e12, 1.0, 0.001):
            await sleep(seconds)
            seen.append(anyio.current_time())
        return seen

    first, second, third = run_guarded(backend, main)
    assert first == 1e12
    assert second == 1e12 + 1.0
    # At 10**12 s a float resolves 2**-13 s: the 1 ms sleep lasts a whole number of those steps.
    assert third >= second
    assert third - second <= 0.001 + 2**-13
    assert third >= 1e12


# -- 3. a worker thread in flight is never overtaken by a jump -----------------------------------------


@BACKENDS
def test_a_worker_thread_result_arrives_before_time_moves(backend: str) -> None:
    async def main() -> list[tuple[str, float]]:
        order: list[tuple[str, float]] = []

        async def sleeper() -> None:
            await anyio.sleep(10)
            order.append(("sleeper", anyio.current_time()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.to_thread.run_sync(time.sleep, 0.05)  # real time, while a 10 s timer waits
            order.append(("thread", anyio.current_time()))
        return order

    assert run_guarded(backend, main) == [("thread", 0.0), ("sleeper", 10.0)]


@BACKENDS
def test_worker_threads_between_sleeps_see_the_time_they_were_called_at(backend: str) -> None:
    async def main() -> list[tuple[float, float]]:
        seen = []
        for _ in range(3):
            before = anyio.current_time()
            await anyio.to_thread.run_sync(time.sleep, 0.01)
            seen.append((before, anyio.current_time()))
            await airp.delay(100)
        return seen

    assert run_guarded(backend, main) == [(0.0, 0.0), (100.0, 100.0), (200.0, 200.0)]


# -- 4. real sockets on virtual time ---------------------------------------------------------------


@BACKENDS
def test_a_socket_written_after_a_virtual_sleep_is_read(backend: str) -> None:
    async def main() -> tuple[bytes, float]:
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            got: list[tuple[bytes, float]] = []

            async def reader() -> None:
                await anyio.wait_readable(a)
                got.append((a.recv(16), anyio.current_time()))

            async def writer() -> None:
                await anyio.sleep(5)
                b.send(b"hello")

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(writer)
            return got[0]

    assert run_guarded(backend, main) == (b"hello", 5.0)


@BACKENDS
def test_timers_fire_while_a_reader_waits_on_a_socket(backend: str) -> None:
    """A task waiting to read a socket does not hold virtual time still: other timers fire, and a
    writer 100 virtual seconds later wakes the reader (through an anyio socket stream)."""

    async def main() -> list[tuple[str, object, float]]:
        a, b = socket.socketpair()
        with b:
            b.setblocking(False)
            events: list[tuple[str, object, float]] = []
            stream = await anyio.abc.SocketStream.from_socket(a)  # takes a over
            async with stream:

                async def reader() -> None:
                    data = await stream.receive()
                    events.append(("read", data, anyio.current_time()))

                async def ticker() -> None:
                    for _ in range(3):
                        await airp.delay(30)
                        events.append(("tick", None, anyio.current_time()))

                async def writer() -> None:
                    await anyio.sleep(100)
                    b.send(b"late")
                    events.append(("write", None, anyio.current_time()))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(reader)
                    tg.start_soon(ticker)
                    tg.start_soon(writer)
            return events

    assert run_guarded(backend, main) == [
        ("tick", None, 30.0),
        ("tick", None, 60.0),
        ("tick", None, 90.0),
        ("write", None, 100.0),
        ("read", b"late", 100.0),
    ]


# -- 5. asyncio: no system call per pass when nothing is watched -------------------------------------


class _CountingSelect:
    """Wraps a selector's ``select``, counting the calls and the timeouts they were given."""

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        selector: Any = loop._selector
        self.selector = selector
        self.original = selector.select
        self.timeouts: list[float | None] = []
        selector.select = self  # an instance attribute, in front of the class's method

    def __call__(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        return self.original(timeout)

    def restore(self) -> None:
        del self.selector.select


def test_asyncio_no_select_without_watched_file_descriptors() -> None:
    async def main() -> tuple[int, int, float, str]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeEventLoop)
        watched = len(loop._selector.get_map())  # the loop's own wake-up pipe only
        counting = _CountingSelect(loop)
        try:
            for _ in range(1000):
                await airp.delay(1)
            for _ in range(1000):
                await anyio.sleep(1)
            async with anyio.create_task_group() as tg:  # tasks and checkpoints: still no poll
                for _ in range(10):
                    tg.start_soon(airp.delay, 5)
                    tg.start_soon(anyio.sleep, 5)
        finally:
            counting.restore()
        return watched, len(counting.timeouts), anyio.current_time(), type(loop).__name__

    watched, selects, now, loop_type = run_guarded("asyncio", main)
    assert loop_type == "VirtualTimeEventLoop"
    assert watched == 1
    assert now == 2005.0
    assert selects == 0


def test_asyncio_a_watched_socket_is_polled_without_blocking() -> None:
    # The counterpart: with a socket registered, each idle pass polls it, with a zero timeout,
    # and virtual time still jumps.
    async def main() -> tuple[list[float | None], float]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)

            async def reader() -> None:
                await anyio.wait_readable(a)

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await wait_until_quiet()  # the reader is waiting on the socket
                assert isinstance(loop, VirtualTimeEventLoop)
                counting = _CountingSelect(loop)
                try:
                    for _ in range(10):
                        await airp.delay(1)
                finally:
                    counting.restore()
                b.send(b"x")
            return counting.timeouts, anyio.current_time()

    timeouts, now = run_guarded("asyncio", main)
    assert now == 10.0
    assert timeouts  # the socket is looked at
    assert set(timeouts) == {0}  # but never waited on in real time while a timer is pending


def test_asyncio_call_soon_threadsafe_wakes_a_loop_waiting_in_real_time() -> None:
    """Without autojump an idle loop with a pending timer waits in real time (in ``select``); a
    plain thread's ``call_soon_threadsafe`` ends that wait at once.  If it did not, the loop would
    wait for the 3600 s timer in real time and the hang guard would fail the test."""

    async def main() -> tuple[float, str, int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeEventLoop)
        counting = _CountingSelect(loop)
        woken = anyio.Event()
        seen: list[str] = []

        def wake() -> None:
            seen.append("callback")
            woken.set()

        def from_thread() -> None:
            time.sleep(0.01)
            loop.call_soon_threadsafe(wake)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 3600)  # a timer that only jump() would bring due
            thread = threading.Thread(target=from_thread, daemon=True)
            thread.start()
            await woken.wait()
            thread.join()
            tg.cancel_scope.cancel()
        counting.restore()
        blocking = sum(1 for t in counting.timeouts if t is None or t > 0)
        return anyio.current_time(), seen[0], blocking

    now, seen, blocking = run_guarded("asyncio", main, autojump=False)
    assert seen == "callback"
    assert now == 0.0  # time moves only through jump()
    assert blocking >= 1  # the loop did wait in select, and the thread's callback ended the wait


def test_asyncio_call_soon_threadsafe_wakes_a_loop_with_nothing_else_to_do() -> None:
    """With ``deadlock_error=False`` a loop with no timer blocks in ``select`` as a real one does;
    a plain thread's ``call_soon_threadsafe`` wakes it."""

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        woken = anyio.Event()
        result: list[str] = []

        def wake() -> None:
            result.append("from thread")
            woken.set()

        def from_thread() -> None:
            time.sleep(0.01)
            loop.call_soon_threadsafe(wake)

        thread = threading.Thread(target=from_thread, daemon=True)
        thread.start()
        await woken.wait()
        thread.join()
        return result[0], anyio.current_time()

    assert run_guarded("asyncio", main, deadlock_error=False) == ("from thread", 0.0)


# -- 6. timers at the same instant fire in the order they were set ------------------------------------


@BACKENDS
def test_sleepers_due_at_the_same_instant_all_wake_then(backend: str) -> None:
    async def main() -> list[tuple[int, float]]:
        woke: list[tuple[int, float]] = []

        async def sleeper(n: int) -> None:
            if n % 2:
                await airp.delay(5)
            else:
                await anyio.sleep(5)
            woke.append((n, anyio.current_time()))

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(sleeper, n)
        return woke

    woke = run_guarded(backend, main)
    assert sorted(woke) == [(n, 5.0) for n in range(10)]  # trio shuffles a batch: order not checked


@pytest.mark.parametrize("sleep", [pytest.param(anyio.sleep, id="anyio.sleep"), pytest.param(airp.delay, id="delay")])
def test_asyncio_sleepers_of_one_kind_wake_in_the_order_they_slept(sleep: Callable[[float], Awaitable[None]]) -> None:
    async def main() -> list[int]:
        woke: list[int] = []

        async def sleeper(n: int) -> None:
            await sleep(5)
            woke.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(sleeper, n)
        return woke

    for _ in range(3):  # on every run
        assert run_guarded("asyncio", main) == list(range(20))


@pytest.mark.parametrize("sleep", [asyncio.sleep, airp.delay], ids=["asyncio.sleep", "airp.delay"])
def test_asyncio_same_instant_order_of_callbacks_and_sleepers_is_asyncio_sleeps(
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """``loop.call_later`` handles and tasks parked by ``airp.delay`` share one heap ordered by
    (time, order of scheduling).  A parked task wakes as a task in ``asyncio.sleep`` does: its
    timer fires in its turn, and the task runs in the next pass, after the callbacks of the same
    instant.  Both kinds of sleeper give the same order."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        fired: list[int] = []

        async def setter(n: int) -> None:
            if n % 2:
                await sleep(5)
                fired.append(n)
            else:
                loop.call_later(5, fired.append, n)

        async with anyio.create_task_group() as tg:
            for n in range(12):
                tg.start_soon(setter, n)
        await anyio.sleep(1)  # past the instant: every callback has run
        return fired

    assert run_guarded("asyncio", main) == [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]


# -- 7. wait_until_quiet with parked delay sleepers --------------------------------------------------


@BACKENDS
def test_wait_until_quiet_does_not_move_time_with_delay_sleepers_parked(backend: str) -> None:
    async def main() -> list[object]:
        notes: list[object] = []
        woke: list[tuple[int, float]] = []

        async def sleeper(seconds: int) -> None:
            await airp.delay(seconds)
            woke.append((seconds, anyio.current_time()))

        async with anyio.create_task_group() as tg:
            for seconds in (10, 20, 30):
                tg.start_soon(sleeper, seconds)
            tg.start_soon(_delay_forever)
            await wait_until_quiet()
            notes.append(("quiet", anyio.current_time(), list(woke)))
            await wait_until_quiet()
            notes.append(("quiet again", anyio.current_time(), list(woke)))
            await airp.delay(15)
            await wait_until_quiet()
            notes.append(("after 15", anyio.current_time(), list(woke)))
            tg.cancel_scope.cancel()
        notes.append(("end", anyio.current_time(), list(woke)))
        return notes

    assert run_guarded(backend, main) == [
        ("quiet", 0.0, []),
        ("quiet again", 0.0, []),
        ("after 15", 15.0, [(10, 10.0)]),
        ("end", 15.0, [(10, 10.0)]),
    ]


def test_asyncio_mixed_sleepers_wake_in_the_order_they_slept() -> None:
    async def main() -> list[tuple[int, str]]:
        woke: list[tuple[int, str]] = []

        async def sleeper(n: int) -> None:
            if n % 2:
                await airp.delay(5)
                woke.append((n, "delay"))
            else:
                await anyio.sleep(5)
                woke.append((n, "anyio.sleep"))

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(sleeper, n)
        return woke

    assert run_guarded("asyncio", main) == [(n, "delay" if n % 2 else "anyio.sleep") for n in range(8)]


# -- 8. subprocesses ---------------------------------------------------------------------------------


@BACKENDS
def test_a_subprocess_with_pipes_runs_on_virtual_time(backend: str) -> None:
    async def main() -> tuple[bytes, float]:
        result = await anyio.run_process([sys.executable, "-c", "print('from the child')"])
        await anyio.sleep(3600)  # virtual: the hour passes at once after the child is done
        return result.stdout, anyio.current_time()

    stdout, now = run_guarded(backend, main)
    assert stdout.strip() == b"from the child"
    assert now == 3600.0


@BACKENDS
def test_a_subprocess_without_pipes_is_waited_for_not_a_deadlock(backend: str) -> None:
    # No pipe is watched: only the child's exit (a waiter thread on asyncio) can wake the run.
    async def main() -> int | None:
        process = await anyio.open_process(
            [sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await process.wait()

    assert run_guarded(backend, main) == 0
