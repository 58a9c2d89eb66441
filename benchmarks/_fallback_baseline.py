"""A stand-in for ``shared/bench/baseline.py``, used only when that file cannot be found.

It is written independently of the shared file and models the same three floors with the same
call shapes (module-level ``ITER``; each coroutine times its own loop and returns microseconds per
operation), so the ratios stay comparable.  Prefer the shared file: the performance budget in
DESIGN.md is defined against it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

ITER = 200_000


def _us_per_op(start: float, count: int) -> float:
    return (time.perf_counter() - start) * 1e6 / count


async def bare_chain(n_layers: int) -> float:
    """``n_layers`` nested awaits; the innermost returns a value."""

    async def step(depth: int, value: int) -> int:
        if depth:
            return await step(depth - 1, value)
        return value + 1

    start = time.perf_counter()
    for i in range(ITER):
        await step(n_layers - 1, i)
    return _us_per_op(start, ITER)


class _Slot:
    __slots__ = ("context", "device", "major", "params", "routine")

    def __init__(self) -> None:
        self.major = 0
        self.params: Any = None
        self.device: Any = None
        self.routine: Any = None
        self.context: Any = None


class _Packet:
    __slots__ = ("current", "done", "information", "pending_returned", "slots", "status")

    def __init__(self, n: int) -> None:
        self.slots = [_Slot() for _ in range(n)]
        self.current = n
        self.status: Any = None
        self.information = 0
        self.pending_returned = False
        self.done = False


async def mini_irp_chain(n_layers: int) -> float:
    """A minimal IRP: a slotted packet, a list of slots, an index that moves, a completion walk."""

    def routine(device: int, packet: _Packet, context: Any) -> int:
        return 0

    async def send(device: int, packet: _Packet) -> int:
        packet.current -= 1
        packet.slots[packet.current].device = device
        return await table[device](device, packet)

    async def middle(device: int, packet: _Packet) -> int:
        here = packet.slots[packet.current]
        below = packet.slots[packet.current - 1]
        below.major = here.major
        below.params = here.params
        below.routine = routine
        return await send(device + 1, packet)

    async def bottom(device: int, packet: _Packet) -> int:
        packet.status = 0
        packet.information = 1
        k = packet.current
        while k < len(packet.slots):
            slot = packet.slots[k]
            if slot.routine is not None:
                slot.routine(slot.device, packet, slot.context)
            k += 1
        packet.done = True
        return 0

    table = [middle] * (n_layers - 1) + [bottom]
    start = time.perf_counter()
    for i in range(ITER):
        packet = _Packet(n_layers)
        first = packet.slots[n_layers - 1]
        first.major = 3
        first.params = i
        await send(0, packet)
    return _us_per_op(start, ITER)


async def anyio_event_handoff() -> float:
    """A requester hands an ``anyio.Event`` to a worker task through a memory stream and waits."""
    count = ITER // 4
    send, receive = anyio.create_memory_object_stream[anyio.Event](1000)

    async def worker() -> None:
        async for event in receive:
            event.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        start = time.perf_counter()
        for _ in range(count):
            event = anyio.Event()
            send.send_nowait(event)
            await event.wait()
        result = _us_per_op(start, count)
        tg.cancel_scope.cancel()
    return result
