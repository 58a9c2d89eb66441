"""No public call allocates without bound from one size argument.

``make_associated_irps(master, 2**70, 1)`` allocated until the kernel killed the process.  Its
count is now bounded by ``MAX_ASSOCIATED_IRPS`` (65,536), checked before anything is allocated.
The other calls whose size argument allocates were bounded already and stay so: ``Irp(n)`` and
``allocate_irp(n)`` (1 to 127 stack locations, a CHAR's worth); lookaside depths and an IrpPool's
``max_idle`` allocate nothing up front (they only cap what is kept).
"""

from __future__ import annotations

import pytest

import airp
from airp import (
    STATUS_INTERNAL_ERROR,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Driver,
    IoManager,
    Irp,
    IrpAllocator,
    IrpMajor,
    complete_request,
    dispatch,
)
from airp._machine._associated import MAX_ASSOCIATED_IRPS


def _master() -> Irp:
    """A master as its highest-level driver holds it: at its location."""
    master = Irp(2)
    master.next_stack_location.major = IrpMajor.READ
    master.set_next_stack_location()
    return master


@pytest.mark.parametrize("count", [2**70, 2**31, MAX_ASSOCIATED_IRPS + 1])
def test_make_associated_irps_refuses_a_count_beyond_the_limit_before_allocating(count: int) -> None:
    master = _master()
    with pytest.raises(ValueError, match=rf"count must be a positive int up to {MAX_ASSOCIATED_IRPS} \(how many parts\), got {count}"):
        airp.make_associated_irps(master, count, 1)
    assert airp.associated_irps(master) == []
    assert master.associated_irp_count == 0
    complete_request(master, STATUS_SUCCESS, 0)  # still the driver's to complete, and it completes


def test_make_associated_irps_limit_is_documented_and_sane() -> None:
    assert MAX_ASSOCIATED_IRPS == 65_536
    assert str(MAX_ASSOCIATED_IRPS) in (airp.make_associated_irps.__doc__ or "").replace(",", "")
    master = _master()
    parts = airp.make_associated_irps(master, 1000, 1)
    assert parts is not None
    assert len(parts) == master.associated_irp_count == 1000


@pytest.mark.parametrize("count", [2.0, "3", None, True])
def test_make_associated_irps_names_a_count_that_is_not_an_int(count: object) -> None:
    with pytest.raises(TypeError, match=r"count must be an int \(how many parts\), got"):
        airp.make_associated_irps(_master(), count, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [2**70, 128, 0, -1])
def test_stack_sizes_stay_bounded(size: int) -> None:
    """Irp(n), allocate_irp(n) and IrpAllocator.allocate_irp(n): 1 to 127 locations."""
    with pytest.raises(ValueError, match="between 1 and 127"):
        Irp(size)
    with pytest.raises(ValueError, match="stack_size must be between 1 and 127"):
        airp.allocate_irp(size)
    with pytest.raises(ValueError, match="stack_size must be between 1 and 127"):
        IrpAllocator().allocate_irp(size)
    with pytest.raises(ValueError, match="stack_size must be between 1 and 127"):
        airp.make_associated_irp(_master(), size)


def test_huge_depths_allocate_nothing_up_front() -> None:
    """A lookaside depth or an IrpPool's max_idle caps what is kept; nothing is made for it."""
    allocator = IrpAllocator(small_depth=2**70, large_depth=2**70)
    stats = allocator.statistics()
    assert stats.small.depth == stats.large.depth == 0
    driver = Driver("pool-owner")
    lower = DeviceObject(Driver("lower"))
    device = DeviceObject(driver)
    airp.attach_device(device, lower)
    pool = airp.IrpPool(device, max_idle=2**70)
    assert pool.statistics().idle == 0


# -- from the requester's side, on both backends --------------------------------------------------


class _Splitter(Driver):
    """Splits each read into parts of ``part`` bytes: a bad part size makes a huge count."""

    def __init__(self, part: float) -> None:
        super().__init__("splitter")
        self.part = part
        self.reads: list[Irp] = []

    @dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        self.reads.append(irp)
        length = irp.current_stack_location.parameters.length
        airp.make_associated_irps(irp, int(length / self.part), device.stack_size)
        raise AssertionError("not reached: the count is refused")  # pragma: no cover


@pytest.mark.anyio
async def test_a_driver_with_a_runaway_part_count_fails_its_read_at_once() -> None:
    """Before: the dispatch routine allocated IRPs until the process was killed.  Now it raises at
    once, the read is completed with STATUS_INTERNAL_ERROR and the requester gets the error."""
    async with IoManager() as io:
        driver = _Splitter(part=2**-60)  # a part size that underflowed: 4 << 60 parts
        io.create_device(driver, "dev", flags=DeviceFlags.BUFFERED_IO)
        async with io.open("dev") as handle:
            with pytest.raises(ValueError, match="make_associated_irps: count must be a positive int up to 65536"):
                await handle.read(4)
            [irp] = driver.reads
            assert irp.completed
            assert irp.status == STATUS_INTERNAL_ERROR
            assert io.outstanding_requests() == []


# -- requester buffers ---------------------------------------------------------------------------


class _Reader(airp.Driver):
    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLOSE, airp.IrpMajor.CLEANUP, airp.IrpMajor.READ, airp.IrpMajor.DEVICE_CONTROL)
    async def anything(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


@pytest.mark.anyio
@pytest.mark.parametrize("flags", [airp.DeviceFlags.BUFFERED_IO, airp.DeviceFlags.DIRECT_IO], ids=["buffered", "direct"])
async def test_a_read_or_output_longer_than_a_dword_is_refused_before_allocating(flags: airp.DeviceFlags) -> None:
    io = airp.IoManager()
    io.create_device(_Reader(), "\\Device\\Huge", flags=flags)
    async with io.open("\\Device\\Huge") as handle:
        with pytest.raises(ValueError, match=r"read length must be at most 4294967295"):
            await handle.read(2**40)
        with pytest.raises(ValueError, match=r"output_length must be at most 4294967295"):
            await handle.device_control(0x22_0000, output_length=2**40)
        assert io.outstanding_requests() == []
        assert await handle.read(4) == b""  # the handle still works (the driver transfers nothing)
    assert airp.MAX_TRANSFER_LENGTH == 2**32 - 1
