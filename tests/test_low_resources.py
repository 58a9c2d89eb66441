"""The low-resources simulation: failing allocations on purpose, reproducibly (issue #3; reference 10.4)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from _own_irp_drivers import Completer, load_example, make_device

import airp
from airp import (
    STATUS_INSUFFICIENT_RESOURCES,
    IrpAllocator,
    LowResourcesSimulation,
    SimulatedFailure,
    allocate_irp,
    free_irp,
)


def outcomes(simulation: LowResourcesSimulation, count: int) -> list[bool]:
    allocator = IrpAllocator(low_resources=simulation)
    result = []
    for _ in range(count):
        irp = allocate_irp(2, allocator=allocator)
        result.append(irp is not None)
        if irp is not None:
            free_irp(irp)
    return result


def test_the_same_seed_fails_the_same_allocations() -> None:
    first = outcomes(LowResourcesSimulation(0.3, seed=11), 200)
    assert first == outcomes(LowResourcesSimulation(0.3, seed=11), 200)
    assert first != outcomes(LowResourcesSimulation(0.3, seed=12), 200)
    assert 30 <= first.count(False) <= 90  # about 30%


def test_fraction_zero_never_fails_and_one_always_fails() -> None:
    assert all(outcomes(LowResourcesSimulation(0.0), 100))
    assert not any(outcomes(LowResourcesSimulation(1.0), 100))


def test_the_default_is_windows_six_percent() -> None:
    simulation = LowResourcesSimulation()
    assert (simulation.fraction, simulation.seed, simulation.systematic) == (0.06, 0, False)


def test_failures_are_recorded_with_their_call_site() -> None:
    simulation = LowResourcesSimulation(1.0)
    allocator = IrpAllocator(low_resources=simulation)
    assert allocate_irp(1, allocator=allocator) is None; line = _line()  # noqa: E702
    assert allocator.allocate_irp(1) is None
    (first, second) = simulation.failures
    assert isinstance(first, SimulatedFailure)
    assert first == SimulatedFailure(1, "allocate_irp", f"{__file__}:{line}")
    assert second.attempt == 2
    assert second.site.endswith(f":{line + 1}")
    assert simulation.attempts == 2
    assert allocator.statistics().failed_allocations == 2
    assert "2 of 2 failed" in repr(simulation)


def _line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    return frame.f_back.f_lineno


def test_systematic_mode_fails_each_call_site_once() -> None:
    simulation = LowResourcesSimulation(systematic=True)
    allocator = IrpAllocator(low_resources=simulation)
    site_a = [allocate_irp(1, allocator=allocator) is not None for _ in range(5)]
    site_b = [allocator.allocate_irp(1) is not None for _ in range(3)]
    assert site_a == [False, True, True, True, True]
    assert site_b == [False, True, True]
    assert len({failure.site for failure in simulation.failures}) == 2
    assert "systematic" in repr(simulation)
    simulation.reset()
    assert simulation.attempts == 0
    assert simulation.failures == ()
    assert allocator.allocate_irp(1) is None  # every site fails once again


def test_switching_the_simulation_off() -> None:
    allocator = IrpAllocator(low_resources=LowResourcesSimulation(1.0))
    assert allocator.allocate_irp(1) is None
    allocator.low_resources = None
    assert allocator.allocate_irp(1) is not None


def test_every_allocator_call_consults_it_but_plain_allocations_do_not() -> None:
    simulation = LowResourcesSimulation(1.0)
    allocator = IrpAllocator(low_resources=simulation)
    master = airp.Irp(1)
    lower = make_device(Completer())
    assert airp.make_associated_irp(master, 1, allocator=allocator) is None
    assert airp.IrpPool(lower, lower, allocator=allocator).get() is None
    assert [f.operation for f in simulation.failures] == ["make_associated_irp", "IrpPool.get"]
    assert allocate_irp(1) is not None  # no allocator, no simulation


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((1.5,), ValueError, "between 0.0"),
        ((-0.1,), ValueError, "between 0.0"),
        (("half",), TypeError, "number"),
        ((True,), TypeError, "number"),
        ((0.5, 1.5), TypeError, "seed must be an int"),
    ],
)
def test_bad_parameters(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        LowResourcesSimulation(*args)


# -- a driver tested on its STATUS_INSUFFICIENT_RESOURCES path ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("variant", ["allocate", "pool"])
async def test_the_example_driver_fails_exactly_the_requests_whose_allocation_failed(variant: str) -> None:
    example = load_example("own_irp_per_request")
    # A seed whose first draw fails, so that the pool (which allocates rarely) sees a failure too.
    seed = next(s for s in range(1000) if random.Random(s).random() < 0.25)
    simulation = LowResourcesSimulation(0.25, seed=seed)
    summary = await example.run(variant, reads=60, concurrency=3, low_resources=simulation)
    assert summary.insufficient_resources == len(simulation.failures) > 0
    assert summary.succeeded + summary.insufficient_resources == 60
    assert summary.allocator.failed_allocations == len(simulation.failures)
    assert summary.allocator.outstanding == 0  # nothing leaked on the failure path
    if variant == "pool":
        assert summary.pool.failed == len(simulation.failures)
        assert summary.pool_report.clean


@pytest.mark.anyio
async def test_systematic_mode_walks_every_allocation_site_of_the_driver_once() -> None:
    example = load_example("own_irp_per_request")
    simulation = LowResourcesSimulation(systematic=True)
    summary = await example.run("allocate", reads=20, concurrency=1, low_resources=simulation)
    # The driver allocates in one place: one read fails, the rest succeed.
    assert summary.insufficient_resources == 1
    assert summary.succeeded == 19
    (failure,) = simulation.failures
    assert failure.site.endswith(".py:" + failure.site.rsplit(":", 1)[1])
    assert "own_irp_per_request" in failure.site


def test_the_status_the_driver_uses() -> None:
    assert STATUS_INSUFFICIENT_RESOURCES == 0xC000009A
