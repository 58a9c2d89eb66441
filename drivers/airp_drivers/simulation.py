"""Driver plugins for ``airp simulate``: a disk with a service-time distribution, a caching filter,
and the seed 004 device with a read lane and a write lane.

They model time, not data: a read returns ``length`` bytes of zeros, a write stores nothing.  Each
is a Plug and Play driver (``add_device``; REMOVE_DEVICE detaches and deletes), so that the
simulator builds its stack through :meth:`airp.IoManager.add_device` like any other.

A service time is given as a number (fixed seconds) or as a table::

    service = 1.0                                          # fixed
    service = { distribution = "fixed", mean = 1.0 }
    service = { distribution = "exponential", mean = 1.0 } # or rate = 1.0

Random draws come from ``random.Random(seed)``, one generator per driver object, drawn in the order
the StartIo routines start, so a run with the same seed and workload is the same run.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    PnpMinor,
    PnpState,
    complete_request,
)

from .filters import _add_filter, _filter_pnp

__all__ = [
    "IOCTL_SIM_GET_INFO",
    "CacheFilter",
    "LanesDisk",
    "ServiceTime",
    "SimDisk",
    "SimDevice",
]

#: Answered at once by the simulation disks (no lane): 8 bytes, the requests served so far.
IOCTL_SIM_GET_INFO: Final = airp.ControlCode.make(0x8003, 0x801)

_GONE: Final = (PnpState.SURPRISE_REMOVED, PnpState.REMOVED)


class ServiceTime:
    """A service-time distribution: fixed, or exponential; drawn from the generator it is given.

    :param spec: seconds (a number: fixed), or a mapping with ``distribution`` (``"fixed"`` or
        ``"exponential"``) and ``mean`` (seconds) or ``rate`` (per second).
    :param what: the parameter's name, for error messages.
    :raises TypeError: if *spec* is neither a number nor a mapping, or a value is not a number.
    :raises ValueError: for an unknown distribution, unknown keys, or a mean that is negative
        (fixed) or not positive (exponential).
    """

    __slots__ = ("distribution", "mean")

    def __init__(self, spec: float | Mapping[str, object], what: str = "service") -> None:
        if isinstance(spec, bool) or not isinstance(spec, (int, float, Mapping)):
            raise TypeError(f"{what}: expected seconds (a number) or a table with distribution and mean, got {spec!r}")
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"distribution", "mean", "rate"}
            if unknown:
                raise ValueError(f"{what}: unknown keys {sorted(unknown)}; expected distribution, mean or rate")
            distribution = spec.get("distribution", "fixed")
            if distribution not in ("fixed", "exponential"):
                raise ValueError(f"{what}.distribution: expected 'fixed' or 'exponential', got {distribution!r}")
            if ("mean" in spec) == ("rate" in spec):
                raise ValueError(f"{what}: give exactly one of mean (seconds) or rate (per second)")
            value = spec["mean"] if "mean" in spec else spec["rate"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{what}: mean and rate are numbers, got {value!r}")
            if "rate" in spec:
                if not value > 0:
                    raise ValueError(f"{what}.rate: expected a rate > 0, got {value!r}")
                value = 1.0 / value
            self.distribution = str(distribution)
            self.mean = float(value)
        else:
            self.distribution = "fixed"
            self.mean = float(spec)
        if not self.mean >= 0 or self.mean == float("inf"):
            raise ValueError(f"{what}: expected a mean of 0 or more seconds, got {self.mean!r}")
        if self.distribution == "exponential" and self.mean == 0:
            raise ValueError(f"{what}: an exponential service time needs a mean > 0")

    def draw(self, rng: random.Random) -> float:
        """One service time, in seconds.

        :param rng: the generator to draw from (unused for a fixed time).
        :returns: the time.
        """
        if self.distribution == "fixed":
            return self.mean
        return rng.expovariate(1.0 / self.mean)

    def __repr__(self) -> str:
        return f"ServiceTime({self.distribution}, mean={self.mean:g})"


class SimDevice:
    """The extension of a simulation disk's device.

    :ivar lower: the device below (the PDO).
    :ivar lanes: the StartIo lanes by name.
    """

    def __init__(self) -> None:
        self.lower: DeviceObject | None = None
        self.lanes: dict[str, airp.StartIoQueue] = {}


class _SimDiskBase(airp.Driver):
    """What both simulation disks share: AddDevice, the IOCTL, PnP, the StartIo routine."""

    def __init__(self, name: str, seed: int) -> None:
        super().__init__(name)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an integer, got {seed!r}")
        self.rng = random.Random(seed)
        #: Requests each lane finished, by lane name.
        self.served: dict[str, int] = {}

    def _lane_times(self) -> dict[str, ServiceTime]:
        raise NotImplementedError

    def simulation_statistics(self) -> dict[str, int]:
        """What ``airp simulate`` reports for this driver: requests served, per lane.

        :returns: ``{"served <lane>": count}``.
        """
        return {f"served {lane}": count for lane, count in self.served.items()}

    def add_device(self, pdo: DeviceObject) -> DeviceObject[SimDevice]:
        """AddDevice: a buffered device above *pdo* with one StartIo lane per kind of work.

        :param pdo: the stack's physical device object.
        :returns: the new device.
        """
        extension = SimDevice()
        device = DeviceObject(self, extension=extension, flags=DeviceFlags.BUFFERED_IO)
        extension.lower = airp.attach_device(device, pdo)
        for lane, service in self._lane_times().items():
            extension.lanes[lane] = airp.StartIoQueue(device, lane, self._start_io_for(lane, service))
            self.served.setdefault(lane, 0)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        return device

    def _start_io_for(self, lane: str, service: ServiceTime) -> airp.StartIoRoutine:
        async def start_io(device: DeviceObject, irp: Irp) -> None:
            # A removal cancels the transfer in progress: it then fails instead of finishing.
            if await airp.wait_or_cancelled(irp, service.draw(self.rng)):
                complete_request(irp, STATUS_NO_SUCH_DEVICE if device.pnp_state in _GONE else STATUS_CANCELLED, 0)
                return
            self.served[lane] += 1
            complete_request(irp, STATUS_SUCCESS, irp.current_stack_location.parameters.length)

        start_io.__qualname__ = f"{type(self).__name__}.start_io[{lane}]"
        return start_io

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        """Opening and closing always succeed.

        :returns: STATUS_SUCCESS.
        """
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: DeviceObject, irp: Irp) -> int:
        """Answer IOCTL_SIM_GET_INFO at once, without a lane; refuse every other code.

        :returns: STATUS_SUCCESS, STATUS_BUFFER_TOO_SMALL or STATUS_INVALID_DEVICE_REQUEST.
        """
        params = irp.current_stack_location.parameters
        if params.io_control_code != IOCTL_SIM_GET_INFO:
            complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0)
            return STATUS_INVALID_DEVICE_REQUEST
        if params.output_buffer_length < 8:
            complete_request(irp, airp.STATUS_BUFFER_TOO_SMALL, 0)
            return airp.STATUS_BUFFER_TOO_SMALL
        assert irp.system_buffer is not None
        irp.system_buffer[:8] = sum(self.served.values()).to_bytes(8, "little")
        complete_request(irp, STATUS_SUCCESS, 8)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject[SimDevice], irp: Irp) -> int:
        """PnP requests go down (the root bus answers them); REMOVE_DEVICE then detaches and deletes.

        The PnP manager has stopped the lanes before SURPRISE_REMOVAL and REMOVE_DEVICE come, so
        the driver holds nothing of its own then.

        :returns: the lower driver's status.
        """
        lower = device.extension.lower
        assert lower is not None
        minor = irp.current_stack_location.minor
        if minor in (PnpMinor.START_DEVICE, PnpMinor.SURPRISE_REMOVAL, PnpMinor.REMOVE_DEVICE):
            irp.status = STATUS_SUCCESS
        status = await airp.pass_down(device, irp)
        if minor == PnpMinor.REMOVE_DEVICE:
            airp.detach_device(lower)
            airp.delete_device(device)
        return status

    def _refuse_if_gone(self, device: DeviceObject, irp: Irp) -> int | None:
        if device.pnp_state in _GONE:
            complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)
            return STATUS_NO_SUCH_DEVICE
        return None


class SimDisk(_SimDiskBase):
    """A disk with one StartIo lane: reads and writes are served one at a time (plugin ``sim-disk``).

    With Poisson arrivals and an exponential service time it is the M/M/1 queue.

    :param service: the service time of a read or a write (see :class:`ServiceTime`).
    :param seed: seeds the service-time draws.
    """

    def __init__(self, service: float | Mapping[str, object] = 0.001, seed: int = 0) -> None:
        super().__init__("sim-disk", seed)
        self.service = ServiceTime(service, "service")

    def _lane_times(self) -> dict[str, ServiceTime]:
        return {"io": self.service}

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def read_write(self, device: DeviceObject[SimDevice], irp: Irp) -> int:
        """Start the request on the lane.

        :returns: STATUS_PENDING, or STATUS_NO_SUCH_DEVICE once the device is gone.
        """
        refused = self._refuse_if_gone(device, irp)
        if refused is not None:
            return refused
        return device.extension.lanes["io"].start_packet(irp)


class LanesDisk(_SimDiskBase):
    """Seed 004's device: a custom StartIo with a read lane and a write lane (plugin ``rw-lanes-disk``).

    The system StartIo queue would serialise reads and writes together; here each direction has
    its own serial lane, and the two run side by side (``examples/read_write_lanes.py``).

    :param service: the service time of both lanes, unless one is given below.
    :param read_service: the read lane's service time.
    :param write_service: the write lane's service time.
    :param seed: seeds the service-time draws.
    """

    def __init__(
        self,
        service: float | Mapping[str, object] = 0.001,
        read_service: float | Mapping[str, object] | None = None,
        write_service: float | Mapping[str, object] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("rw-lanes-disk", seed)
        self.read_service = ServiceTime(service if read_service is None else read_service, "read_service")
        self.write_service = ServiceTime(service if write_service is None else write_service, "write_service")

    def _lane_times(self) -> dict[str, ServiceTime]:
        return {"read": self.read_service, "write": self.write_service}

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject[SimDevice], irp: Irp) -> int:
        """Start the read on the read lane.

        :returns: STATUS_PENDING, or STATUS_NO_SUCH_DEVICE once the device is gone.
        """
        refused = self._refuse_if_gone(device, irp)
        if refused is not None:
            return refused
        return device.extension.lanes["read"].start_packet(irp)

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject[SimDevice], irp: Irp) -> int:
        """Start the write on the write lane.

        :returns: STATUS_PENDING, or STATUS_NO_SUCH_DEVICE once the device is gone.
        """
        refused = self._refuse_if_gone(device, irp)
        if refused is not None:
            return refused
        return device.extension.lanes["write"].start_packet(irp)


class CacheFilter(airp.Driver):
    """An upper filter caching blocks by offset, least recently used first out (plugin ``cache-filter``).

    A read whose block is cached completes in the filter's dispatch routine, after *hit_latency*
    seconds (``0``: synchronously); a miss goes down, and its block is cached when it comes back
    successfully.  Writes go through to the device below and cache their block on the way up
    (write-through).  Everything else passes down untouched.

    :param capacity: blocks the cache holds (``0``: nothing is ever cached).
    :param block_size: bytes per block; a request's block is ``offset // block_size``.
    :param hit_latency: seconds a hit takes.
    :ivar hits: reads answered from the cache.
    :ivar misses: reads passed down.
    :ivar evictions: blocks dropped to make room.
    """

    pass_through = True

    def __init__(self, capacity: int = 1024, block_size: int = 4096, hit_latency: float = 0.0) -> None:
        super().__init__("cache-filter")
        for what, value, low in (("capacity", capacity, 0), ("block_size", block_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{what}: expected an integer, got {value!r}")
            if value < low:
                raise ValueError(f"{what}: expected an integer >= {low}, got {value!r}")
        if isinstance(hit_latency, bool) or not isinstance(hit_latency, (int, float)) or not hit_latency >= 0:
            raise ValueError(f"hit_latency: expected seconds >= 0, got {hit_latency!r}")
        self.capacity = capacity
        self.block_size = block_size
        self.hit_latency = float(hit_latency)
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def hit_ratio(self) -> float:
        """Hits over reads so far (0.0 before any read)."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    def simulation_statistics(self) -> dict[str, float]:
        """What ``airp simulate`` reports for this driver.

        :returns: hits, misses, hit_ratio and evictions.
        """
        return {"hits": self.hits, "misses": self.misses, "hit_ratio": self.hit_ratio, "evictions": self.evictions}

    def add_device(self, pdo: DeviceObject) -> DeviceObject:
        """AddDevice: attach a filter device on top of the stack built so far on *pdo*.

        :param pdo: the stack's physical device object.
        :returns: the filter device.
        """
        return _add_filter(self, pdo)

    def _block(self, irp: Irp) -> int:
        return int(irp.current_stack_location.parameters.byte_offset) // self.block_size

    def _remember(self, block: int) -> None:
        if self.capacity == 0:
            return
        blocks = self.blocks
        if block in blocks:
            blocks.move_to_end(block)
            return
        blocks[block] = None
        if len(blocks) > self.capacity:
            blocks.popitem(last=False)
            self.evictions += 1

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        """Answer a cached block here; send a miss down with a completion routine that caches it.

        On cancellation (of the task the filter runs in, during a hit's latency): the IRP is
        completed with STATUS_CANCELLED before the cancellation goes on.

        :returns: STATUS_SUCCESS for a hit, else the lower driver's status.
        """
        block = self._block(irp)
        if block in self.blocks:
            self.hits += 1
            self.blocks.move_to_end(block)
            if self.hit_latency and await airp.wait_or_cancelled(irp, self.hit_latency):
                complete_request(irp, STATUS_CANCELLED, 0)
                return STATUS_CANCELLED
            complete_request(irp, STATUS_SUCCESS, irp.current_stack_location.parameters.length)
            return STATUS_SUCCESS
        self.misses += 1
        return await self._down_and_cache(device, irp, block)

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject, irp: Irp) -> int:
        """Write through: send the write down; cache its block once it succeeded.

        :returns: the lower driver's status.
        """
        return await self._down_and_cache(device, irp, self._block(irp))

    async def _down_and_cache(self, device: DeviceObject, irp: Irp, block: int) -> int:
        lower = device.lower_device
        assert lower is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self._on_complete, block)
        return await airp.call_driver(lower, irp)

    def _on_complete(self, device: DeviceObject | None, irp: Irp, block: int) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        if irp.status == STATUS_SUCCESS:
            self._remember(block)
        return airp.STATUS_CONTINUE_COMPLETION

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        """PnP requests go down untouched; REMOVE_DEVICE then detaches and deletes the filter device.

        :returns: the lower driver's status.
        """
        return await _filter_pnp(device, irp)
