"""The low-resources simulation's failure log is bounded.

``LowResourcesSimulation`` kept a :class:`airp.SimulatedFailure` for every allocation it failed,
about 190 bytes each, for as long as the simulation lived: over a long verifier run (the fault
harness's 200,000 operations fail about 2,800 allocations) the log was what grew.  It keeps the
most recent ``KEPT_FAILURES`` records now, and counts every failure in ``failure_count``.
"""

from __future__ import annotations

import gc
import tracemalloc

import airp


def fail(allocator: airp.IrpAllocator, times: int) -> None:
    for _ in range(times):
        assert airp.allocate_irp(1, allocator=allocator) is None


def test_the_simulation_keeps_the_most_recent_failures_and_counts_them_all() -> None:
    kept = airp.LowResourcesSimulation.KEPT_FAILURES
    assert kept == 1000
    simulation = airp.LowResourcesSimulation(1.0)  # every allocation fails
    allocator = airp.IrpAllocator(low_resources=simulation)
    fail(allocator, kept + 500)
    assert simulation.failure_count == kept + 500
    assert simulation.attempts == kept + 500
    assert len(simulation.failures) == kept
    # The oldest went first: the records are those of the last KEPT_FAILURES attempts, in order.
    assert [failure.attempt for failure in simulation.failures] == list(range(501, kept + 501))
    assert all(failure.operation == "allocate_irp" and failure.site.startswith(__file__) for failure in simulation.failures)
    assert f"{kept + 500} of {kept + 500} failed" in repr(simulation)
    assert allocator.statistics().failed_allocations == kept + 500
    simulation.reset()
    assert simulation.failure_count == 0
    assert simulation.failures == ()


def test_below_the_cap_every_failure_is_kept() -> None:
    simulation = airp.LowResourcesSimulation(1.0)
    allocator = airp.IrpAllocator(low_resources=simulation)
    fail(allocator, 3)
    assert [failure.attempt for failure in simulation.failures] == [1, 2, 3]
    assert simulation.failure_count == 3


def test_memory_stays_flat_once_the_log_is_full() -> None:
    simulation = airp.LowResourcesSimulation(1.0)
    allocator = airp.IrpAllocator(low_resources=simulation)
    tracemalloc.start()  # before the log fills: the records it drops later were traced too
    try:
        # Full, and full of records made under tracing (the first 256 attempt numbers are
        # CPython's cached small ints, which their replacements are not).
        fail(allocator, 2 * airp.LowResourcesSimulation.KEPT_FAILURES)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        fail(allocator, 5000)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 5,000 records kept would be about 950 KiB; the log stays at its size (a few bytes of slack).
    assert growth < 4096, growth
    assert simulation.failure_count == 2 * airp.LowResourcesSimulation.KEPT_FAILURES + 5000
