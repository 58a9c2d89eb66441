"""IRPs a driver creates itself: allocation, lookaside lists, freeing, reuse (reference 2.1 to 2.4, 5.8).

A driver that sends requests of its own (a USB driver submitting interrupt transfers, a filter
splitting a read) allocates IRPs, sends them with a completion routine that returns
STATUS_MORE_PROCESSING_REQUIRED, and then frees or reuses them.  This module gives it:

- :func:`allocate_irp` (``IoAllocateIrp``), optionally through an :class:`IrpAllocator` that keeps
  the two lookaside lists of reference 2.2 (a *small* list for one-location IRPs and a *large* list
  for two to eight locations), with statistics and a low-resources simulation;
- :func:`free_irp` (``IoFreeIrp``) and :func:`reuse_irp` (``IoReuseIrp``), with the preconditions
  of 2.3 and 2.4 checked and reported as the bug checks Driver Verifier raises;
- (in the async shell, ``airp._shell._send``) :func:`~airp.send_irp`: :func:`~airp.call_driver` plus
  the StackSize rule of reference 8.3;
- the rule of 5.8: a driver-allocated IRP whose completion walk reaches the top (its creator's
  completion routine did not return STATUS_MORE_PROCESSING_REQUIRED, or there was none) raises
  bug check 0x2A at that moment, instead of being "delivered" to a requester it does not have.

Like the rest of the IRP machine this module imports no event loop library: allocation, freeing and
reuse are plain synchronous calls, safe to make from completion routines.

Where airp departs from Windows (each also said where it applies):

- No per-processor lists: airp runs on one event-loop thread, so the P and L lists of 2.2 collapse
  into one list per size class.  Depths are fixed maxima (Windows tunes them at run time).
- Windows keeps every large-list IRP at eight locations so that one block serves any request of
  two to eight.  An airp IRP has exactly ``stack_count`` locations (the memory budget of an IRP
  depends on it), so the large list serves a request from an idle IRP of the *same* size; a
  request for a size it holds none of counts as a miss.  A driver sends its own IRPs to one target
  with one stack size, so the hit rate is the same in practice.
- IRPs are reinitialised on the way *out* of a list (when allocated again), not on the way in, so
  that freeing an IRP from inside its completion routine leaves it intact for the rest of the walk
  (and for a tracing monitor).  An idle IRP therefore keeps its last buffers alive until it is
  handed out again or the list is trimmed; the lists are bounded, and :meth:`IrpAllocator.trim`
  empties them.
"""

from __future__ import annotations

import collections
import enum
import random
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from ._arguments import check_hooks
from ._bugcheck import BugCheck, BugCheckCode, VerifierCode
from ._codes import IrpFlags
from ._completion import LAST_ROUTINE, WALK_START, _install_creator_final_stage
from ._device import DeviceObject
from ._irp import _UNUSED, MAX_STACK_SIZE, Irp
from ._misuse import must_be
from ._monitor import current_request
from ._status import STATUS_SUCCESS, NtStatus

if TYPE_CHECKING:
    from ._driver import Driver
    from ._monitor import MonitorHooks

__all__ = [
    "LOOKASIDE_MAX_LOCATIONS",
    "AllocationFlags",
    "AllocatorStatistics",
    "IrpAllocator",
    "LookasideStatistics",
    "LowResourcesSimulation",
    "SimulatedFailure",
    "allocate_irp",
    "free_irp",
    "reuse_irp",
]

#: IRPs of up to this many locations come from the lookaside lists (``IopLargeIrpStackLocations``).
LOOKASIDE_MAX_LOCATIONS: Final = 8


class AllocationFlags(enum.IntFlag):
    """``Irp.AllocationFlags`` (reference 1.1, 2.2): how an IRP was allocated, hence how it is freed.

    :func:`allocate_irp` sets them; :func:`reuse_irp` keeps them; :func:`free_irp` reads them.
    ``irp.allocation_flags`` holds them as a plain int (it is read on every free); decode it with
    ``AllocationFlags(irp.allocation_flags)``.
    """

    #: Allocated with quota charged to the requester (``charge_quota=True``): never from a lookaside
    #: list, always returned to the pool.
    QUOTA_CHARGED = 0x01
    #: Allocated from the must-succeed pool.  Defined for completeness: like ReactOS, airp never sets
    #: it (Python allocations do not fail short of :class:`MemoryError`).
    ALLOCATED_MUST_SUCCEED = 0x02
    #: A lookaside-sized IRP (one to eight locations, no quota): freeing it offers it to a lookaside
    #: list, even if it was allocated from the pool after a miss.
    ALLOCATED_FIXED_SIZE = 0x04
    #: Windows sets it on a quota-charged IRP taken from a lookaside list.  ReactOS and airp never
    #: take quota-charged IRPs from the lists, so it is never set.
    LOOKASIDE_ALLOCATION = 0x08


class _Origin:
    """Who made an IRP, which decides who frees it (reference 2.9).

    Small ints rather than an Enum: they are compared on every allocation and free.
    """

    ALLOCATED = 0  # allocate_irp: the driver frees or reuses it; the rule of 5.8 applies
    BARE = 1  # Irp(n) / IoManager.allocate_irp: the driver's, none of airp's checks at completion
    ASYNCHRONOUS = 2  # build_asynchronous_fsd_request: the driver frees it; 5.8 applies; no reuse
    ASSOCIATED = 3  # make_associated_irp: the I/O manager frees it when it completes
    SYNCHRONOUS = 4  # build_synchronous_fsd_request: on the task's list; the I/O manager frees it
    DEVICE_CONTROL = 5  # build_device_io_control_request: likewise


_ORIGIN_NAMES: Final = (
    "allocate_irp",
    "Irp() / IoManager.allocate_irp",
    "build_asynchronous_fsd_request",
    "make_associated_irp",
    "build_synchronous_fsd_request",
    "build_device_io_control_request",
)

_QUOTA_CHARGED: Final = 0x01
_FIXED_SIZE: Final = 0x04


class _Kind:
    """Where an IRP came from: its origin and its allocator.  Shared by all IRPs of that kind."""

    __slots__ = ("allocator", "origin")

    def __init__(self, origin: int, allocator: IrpAllocator | None) -> None:
        self.origin = origin
        self.allocator = allocator


_PLAIN_KINDS: Final = tuple(_Kind(origin, None) for origin in range(len(_ORIGIN_NAMES)))

# What airp knows about an IRP it allocated lives in the IRP's instance dict (where Irp keeps its
# rarely written fields), so an IRP airp did not allocate costs nothing:
#   _KIND     the IRP's _Kind                        (every IRP airp allocated)
#   _FREED    True once freed                       (gone when the IRP is allocated again)
#   _ROUTINE  the creator's completion routine, as send_irp saw it (for the 5.8 message)
#   _MASTER   an associated IRP's master (Irp.master_irp is cleared before its final stage)
#   _CREATOR  the index of the location its creator holds it at, once known (see _in_use)
# Irp._reinitialize clears the dict; reuse restores the kind and the allocation flags.
_KIND: Final = "_airp_kind"
_FREED: Final = "_airp_freed"
_ROUTINE: Final = "_airp_routine"
_MASTER: Final = "_airp_master"
_CREATOR: Final = "_airp_creator"

# In the master's instance dict: its associated IRPs that have not completed (insertion-ordered).
_OUTSTANDING: Final = "_airp_associated_irps"


def _kind(irp: Irp) -> _Kind | None:
    kind: _Kind | None = irp.__dict__.get(_KIND)
    return kind


def _check_stack_size(stack_size: object) -> int:
    if type(stack_size) is not int:
        raise TypeError(f"stack_size must be an int (the number of stack locations), got {type(stack_size).__name__} {stack_size!r}")
    if not 1 <= stack_size <= MAX_STACK_SIZE:
        raise ValueError(
            f"stack_size must be between 1 and {MAX_STACK_SIZE} (StackCount is a CHAR), got {stack_size}: an IRP"
            " for a device needs that device's stack_size locations, one more if the sender keeps one"
        )
    return stack_size


# -- statistics -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LookasideStatistics:
    """A snapshot of one lookaside list (the counters of Windows' ``GENERAL_LOOKASIDE``).

    :ivar name: ``"small"`` (one-location IRPs) or ``"large"`` (two to eight locations).
    :ivar maximum_depth: how many idle IRPs the list keeps at most.
    :ivar depth: how many idle IRPs it holds now.
    :ivar total_allocations: allocations that tried this list (``TotalAllocates``).
    :ivar allocation_misses: of those, how many found no idle IRP and fell back to the pool
        (``AllocateMisses``).
    :ivar total_frees: frees offered to this list (``TotalFrees``).
    :ivar free_misses: of those, how many found the list full and went back to the pool
        (``FreeMisses``).
    """

    name: str
    maximum_depth: int
    depth: int
    total_allocations: int
    allocation_misses: int
    total_frees: int
    free_misses: int

    @property
    def hits(self) -> int:
        """Allocations served from the list."""
        return self.total_allocations - self.allocation_misses


@dataclass(frozen=True, slots=True)
class AllocatorStatistics:
    """A snapshot of an :class:`IrpAllocator`.

    :ivar small: the small list (one location).
    :ivar large: the large list (two to eight locations).
    :ivar pool_allocations: IRPs created new: lookaside misses, IRPs of more than eight locations,
        quota-charged IRPs.
    :ivar pool_frees: IRPs given up to the garbage collector: not lookaside-sized, quota-charged, a
        full list, or freed by the I/O manager (associated and built synchronous IRPs).
    :ivar failed_allocations: allocations the low-resources simulation failed.
    :ivar outstanding: IRPs handed out and not freed yet.
    """

    small: LookasideStatistics
    large: LookasideStatistics
    pool_allocations: int
    pool_frees: int
    failed_allocations: int
    outstanding: int


# -- low-resources simulation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulatedFailure:
    """One allocation the low-resources simulation failed.

    :ivar attempt: the allocation's number among all the simulation has seen (1-based).
    :ivar operation: what was being allocated (``"allocate_irp"``, ``"make_associated_irp"``, ...).
    :ivar site: ``"file:line"`` of the driver code that asked (the first caller outside airp).
    """

    attempt: int
    operation: str
    site: str


def _call_site() -> tuple[str, int]:
    """The first frame outside the airp package: the driver code that asked for an allocation."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name != "airp" and not name.startswith("airp."):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>", 0


class LowResourcesSimulation:
    """Driver Verifier's low-resources simulation (reference 10.4) for IRP allocations.

    Install it on an :class:`IrpAllocator` (``IrpAllocator(low_resources=sim)`` or
    ``allocator.low_resources = sim``; ``None`` switches it off again).  Every allocation through that
    allocator (:func:`allocate_irp`, :func:`~airp.make_associated_irp`, the build helpers, an
    :class:`~airp.IrpPool` that has no idle IRP) then consults it first, and a failed allocation
    returns ``None``, exactly as the Windows call returns NULL, so the driver takes its
    STATUS_INSUFFICIENT_RESOURCES path.  Reusing an idle IRP never fails (``IoReuseIrp`` cannot).

    Two modes, both reproducible:

    - random (the default): each allocation fails with probability *fraction*, drawn from a
      :class:`random.Random` seeded with *seed*, so the same sequence of allocations fails the same
      way every run.  Windows' simulation fails about 6% (the default).
    - systematic: the first allocation from each distinct call site (the ``file:line`` of the
      driver code that asked) fails, every later one from that site succeeds.  Run a test until it
      passes once with the simulation on, and every allocation site of the driver has been through
      its failure path once.  *fraction* and *seed* are not used.

    Every failure is counted (:attr:`failure_count`), and the most recent ones are kept as
    :class:`SimulatedFailure` records (:attr:`failures`): at most :attr:`KEPT_FAILURES` of them,
    so that a long run under the simulation does not grow without limit.

    Departures: Windows starts failing only after the system has run for a while (about eight
    minutes) and identifies a site by its whole call stack; airp starts at once and uses the
    caller's ``file:line``.

    :param fraction: probability of failure, 0.0 to 1.0 (random mode).
    :param seed: seed of the random generator (random mode).
    :param systematic: fail each call site once instead.
    :raises ValueError: if *fraction* is outside 0.0 to 1.0.
    :raises TypeError: if *fraction* is not a number or *seed* not an int.
    """

    #: How many failure records :attr:`failures` keeps: the most recent ones.  Each costs about
    #: 190 bytes (with its call-site string); a run that fails an allocation every few dozen would
    #: otherwise keep one per failure for as long as the simulation lives.  :attr:`failure_count`
    #: counts every failure, kept or not.
    KEPT_FAILURES: ClassVar[int] = 1000

    def __init__(self, fraction: float = 0.06, seed: int = 0, *, systematic: bool = False) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number between 0.0 and 1.0, got {type(fraction).__name__} {fraction!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be between 0.0 (never fail) and 1.0 (always fail), got {fraction!r}")
        if type(seed) is not int:
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self._fraction = float(fraction)
        self._seed = seed
        self._systematic = bool(systematic)
        self._rng = random.Random(seed)
        self._sites: set[tuple[str, int]] = set()
        self._attempts = 0
        self._failed = 0
        # The last KEPT_FAILURES records: a bounded deque drops the oldest as it appends.
        self._failures: collections.deque[SimulatedFailure] = collections.deque(maxlen=self.KEPT_FAILURES)

    @property
    def fraction(self) -> float:
        """The probability of failure (random mode)."""
        return self._fraction

    @property
    def seed(self) -> int:
        """The seed of the random generator (random mode)."""
        return self._seed

    @property
    def systematic(self) -> bool:
        """True in systematic mode (each call site fails once)."""
        return self._systematic

    @property
    def attempts(self) -> int:
        """How many allocations have consulted the simulation."""
        return self._attempts

    @property
    def failures(self) -> tuple[SimulatedFailure, ...]:
        """The most recent allocations failed, oldest first: all of them up to :attr:`KEPT_FAILURES`.

        Count failures with :attr:`failure_count`: past :attr:`KEPT_FAILURES`, this holds fewer.
        """
        return tuple(self._failures)

    @property
    def failure_count(self) -> int:
        """How many allocations the simulation has failed, whether :attr:`failures` still lists them or not."""
        return self._failed

    def reset(self) -> None:
        """Start again: reseed the generator, forget the call sites and the failures."""
        self._rng = random.Random(self._seed)
        self._sites.clear()
        self._attempts = 0
        self._failed = 0
        self._failures.clear()

    def _fails(self, operation: str) -> bool:
        self._attempts += 1
        if self._systematic:
            site = _call_site()
            if site in self._sites:
                return False
            self._sites.add(site)
        else:
            if self._rng.random() >= self._fraction:
                return False
            site = _call_site()
        self._failed += 1
        self._failures.append(SimulatedFailure(self._attempts, operation, f"{site[0]}:{site[1]}"))
        return True

    def __repr__(self) -> str:
        mode = "systematic" if self._systematic else f"fraction={self._fraction:g} seed={self._seed}"
        return f"<LowResourcesSimulation {mode}: {self._failed} of {self._attempts} failed>"


# -- the allocator and its lookaside lists -----------------------------------------------------------


class _Lookaside:
    __slots__ = ("allocation_misses", "depth", "free_misses", "idle", "maximum_depth", "name", "total_allocations", "total_frees")

    def __init__(self, name: str, maximum_depth: int) -> None:
        self.name = name
        self.maximum_depth = maximum_depth
        self.depth = 0
        # Idle IRPs by stack size, each list used as a LIFO (the most recently freed IRP is warmest).
        self.idle: dict[int, list[Irp]] = {}
        self.total_allocations = 0
        self.allocation_misses = 0
        self.total_frees = 0
        self.free_misses = 0

    def pop(self, stack_size: int) -> Irp | None:
        self.total_allocations += 1
        idle = self.idle.get(stack_size)
        if idle:
            self.depth -= 1
            return idle.pop()
        self.allocation_misses += 1
        return None

    def push(self, irp: Irp) -> bool:
        self.total_frees += 1
        if self.depth >= self.maximum_depth:
            self.free_misses += 1
            return False
        idle = self.idle.get(irp.stack_count)
        if idle is None:
            idle = self.idle[irp.stack_count] = []
        idle.append(irp)
        self.depth += 1
        return True

    def snapshot(self) -> LookasideStatistics:
        return LookasideStatistics(
            self.name,
            self.maximum_depth,
            self.depth,
            self.total_allocations,
            self.allocation_misses,
            self.total_frees,
            self.free_misses,
        )


def _check_depth(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be an int >= 0 (0 turns the list off), got {value!r}")
    return value


class IrpAllocator:
    """The lookaside lists of reference 2.2, with statistics and an optional low-resources simulation.

    Give each device its own allocator, or share one between all the devices an
    :class:`~airp.IoManager` runs (the scope of the lists is yours to choose), and pass it to
    :func:`allocate_irp`, :func:`~airp.make_associated_irp`, the build helpers or an
    :class:`~airp.IrpPool`.  An IRP remembers its allocator, so :func:`free_irp` needs none.

    - IRPs of one location come from the *small* list, two to eight from the *large* list, without
      quota.  A miss allocates a new IRP, which still goes to a list when freed (``FIXED_SIZE``).
    - Larger or quota-charged IRPs always come from the pool and go back to it.
    - Freed lookaside-sized IRPs are kept while the list is below its maximum depth.

    The allocator is a plain object with no event-loop state; all its calls are synchronous and may
    be made from completion routines.  Concurrent tasks on one loop are safe: nothing in it awaits.

    :param small_depth: maximum idle IRPs in the small list (0 turns it off).
    :param large_depth: maximum idle IRPs in the large list (0 turns it off).
    :param low_resources: a :class:`LowResourcesSimulation` to consult on every allocation, or ``None``.
    :param monitor: an :class:`~airp.IrpMonitor` that every IRP handed out reports to, or ``None``.
    :param owner: the :class:`~airp.Driver` whose IRPs these are: unloading it
        (:meth:`airp.IoManager.unload_driver`) is refused while any is outstanding.
    :raises ValueError: if a depth is negative or not an int.
    :raises TypeError: if *owner* is not a driver, *low_resources* not a LowResourcesSimulation or
        *monitor* not a monitor (an object with the hooks of an IrpMonitor).
    :ivar low_resources: the simulation in force; assign ``None`` to switch it off.
    :ivar monitor: the monitor in force, or ``None``.
    :ivar owner: the driver given as *owner*, or ``None``.
    """

    def __init__(
        self,
        *,
        small_depth: int = 64,
        large_depth: int = 64,
        low_resources: LowResourcesSimulation | None = None,
        monitor: MonitorHooks | None = None,
        owner: Driver | None = None,
    ) -> None:
        if low_resources is not None and not isinstance(low_resources, LowResourcesSimulation):
            raise must_be("low_resources", "an airp.LowResourcesSimulation or None", low_resources)
        check_hooks("monitor", monitor)
        if owner is not None:
            if not hasattr(owner, "_irp_allocators"):
                raise TypeError(f"an IrpAllocator's owner is the airp.Driver whose IRPs it hands out, got {owner!r}")
            owner._irp_allocators.add(self)
        self.owner = owner
        self._small = _Lookaside("small", _check_depth(small_depth, "small_depth"))
        self._large = _Lookaside("large", _check_depth(large_depth, "large_depth"))
        self.low_resources = low_resources
        self.monitor = monitor
        self._pool_allocations = 0
        self._pool_frees = 0
        self._failed = 0
        self._outstanding = 0
        self._kinds = tuple(_Kind(origin, self) for origin in range(len(_ORIGIN_NAMES)))

    def allocate_irp(self, stack_size: int, charge_quota: bool = False) -> Irp | None:
        """``IoAllocateIrp`` through this allocator's lookaside lists; see :func:`allocate_irp`."""
        return self._allocate(stack_size, charge_quota, _Origin.ALLOCATED, "allocate_irp")

    def _allocate(self, stack_size: int, charge_quota: bool, origin: int, operation: str) -> Irp | None:
        if type(stack_size) is not int or not 1 <= stack_size <= MAX_STACK_SIZE:
            _check_stack_size(stack_size)
        simulation = self.low_resources
        if simulation is not None and simulation._fails(operation):
            self._failed += 1
            return None
        irp: Irp | None = None
        if charge_quota:
            flags = _QUOTA_CHARGED
        elif stack_size <= LOOKASIDE_MAX_LOCATIONS:
            flags = _FIXED_SIZE
            irp = (self._small if stack_size == 1 else self._large).pop(stack_size)
        else:
            flags = 0
        if irp is None:
            self._pool_allocations += 1
            irp = Irp(stack_size)
        else:
            irp._reinitialize()  # IoInitializeIrp on the way out of the list (see the module notes)
        d = irp.__dict__
        d[_KIND] = self._kinds[origin]
        if flags:
            d["allocation_flags"] = flags
        if origin == _Origin.ALLOCATED or origin == _Origin.ASYNCHRONOUS:
            irp._final_stage = _creator_rule_violated
        self._outstanding += 1
        if self.monitor is not None:
            self.monitor.watch(irp)
        if current_request.get() is not None:
            _watch_as_child(irp)
        return irp

    def _release(self, irp: Irp, flags: int) -> None:
        """``IoFreeIrp``'s second half: offer *irp* to its list, or give it up.

        Only an IRP provably back with its creator goes to a list (:func:`_back_with_creator`):
        a list never hands out an object a lower driver may still hold.

        An IRP that goes to a list keeps nothing else alive while it waits there, which may be
        for ever: its stack locations drop the devices it last went through, its file object,
        parameters and completion routines with their contexts (the request a driver's own IRP
        served); the IRP drops its file object, buffers and waiter; and of its instance dict
        only what its misuse is diagnosed by stays (kind, allocation flags, the creator's
        location, freed), not the notes that name routines and devices (send_irp's record of the
        creator's routine, a wrong return's device, a cancel routine that ran ...).  Otherwise
        idle IRPs kept removed device stacks, and what their requests held, alive.  The rest is
        reset when the IRP is handed out again (``Irp._reinitialize``), as before.  A late second
        completion is still bug check 0x44, though it can no longer name the driver that
        completed again, nor the creator's routine.
        """
        self._outstanding -= 1
        if (
            flags & _FIXED_SIZE
            and _back_with_creator(irp)
            and (self._small if irp.stack_count == 1 else self._large).push(irp)
        ):
            # Written out rather than a helper's call: this runs on every free to a list.
            for loc in irp._stack:
                if loc is not _UNUSED:
                    loc.device = None
                    loc.file_object = None
                    loc.parameters = None
                    loc.completion_routine = None
                    loc.completion_context = None
            irp.file_object = None
            irp.system_buffer = None
            irp.user_buffer = None
            irp.mdl = None
            irp._waiter = None
            d = irp.__dict__
            d.pop(_ROUTINE, None)
            # Kind, allocation flags and freed, and the creator's location if it was sent with
            # send_irp: any other entry is a note (a wrong return, a cancel routine that ran ...).
            if len(d) > 3 + (_CREATOR in d):
                kept = {_KIND: d[_KIND], "allocation_flags": flags, _FREED: True}
                creator = d.get(_CREATOR)
                if creator is not None:
                    kept[_CREATOR] = creator
                irp.__dict__ = kept
            return
        self._pool_frees += 1

    def _released_by_io_manager(self) -> None:
        # Associated and built synchronous IRPs: the requester may still read a completed one
        # through its Overlapped, so it is left to the garbage collector rather than recycled.
        self._outstanding -= 1
        self._pool_frees += 1

    def statistics(self) -> AllocatorStatistics:
        """A frozen snapshot of the lists and counters."""
        return AllocatorStatistics(
            self._small.snapshot(),
            self._large.snapshot(),
            self._pool_allocations,
            self._pool_frees,
            self._failed,
            self._outstanding,
        )

    def trim(self) -> int:
        """Empty both lookaside lists, giving their idle IRPs up (for a driver's unload or removal).

        :returns: how many idle IRPs were dropped.
        """
        dropped = 0
        for lookaside in (self._small, self._large):
            dropped += lookaside.depth
            lookaside.idle.clear()
            lookaside.depth = 0
        self._pool_frees += dropped
        return dropped

    def __repr__(self) -> str:
        return (
            f"<IrpAllocator small {self._small.depth}/{self._small.maximum_depth}"
            f" large {self._large.depth}/{self._large.maximum_depth} outstanding {self._outstanding}>"
        )


def _allocate(
    stack_size: int,
    charge_quota: bool,
    allocator: IrpAllocator | None,
    origin: int,
    operation: str,
) -> Irp | None:
    """Allocate for *origin*: through *allocator*, or from the pool with no lookaside or simulation."""
    if allocator is not None:
        if type(allocator) is not IrpAllocator and not isinstance(allocator, IrpAllocator):
            raise must_be("allocator", "an airp.IrpAllocator or None", allocator)
        return allocator._allocate(stack_size, charge_quota, origin, operation)
    if type(stack_size) is not int or not 1 <= stack_size <= MAX_STACK_SIZE:
        _check_stack_size(stack_size)
    irp = Irp(stack_size)
    d = irp.__dict__
    d[_KIND] = _PLAIN_KINDS[origin]
    if charge_quota:
        d["allocation_flags"] = _QUOTA_CHARGED
    elif stack_size <= LOOKASIDE_MAX_LOCATIONS:
        d["allocation_flags"] = _FIXED_SIZE
    if origin == _Origin.ALLOCATED or origin == _Origin.ASYNCHRONOUS:
        irp._final_stage = _creator_rule_violated
    if current_request.get() is not None:
        _watch_as_child(irp)
    return irp


def _watch_as_child(irp: Irp) -> None:
    """A driver allocated *irp* while it worked on a watched request: watch it with the same
    hooks (unless its allocator's monitor already does) and link it to that request."""
    parent = current_request.get()
    assert parent is not None
    hooks = parent._monitor
    if hooks is None:
        return
    if irp._monitor is None:
        hooks.watch(irp)
    hooks.linked(irp, parent)


def allocate_irp(stack_size: int, charge_quota: bool = False, *, allocator: IrpAllocator | None = None) -> Irp | None:
    """``IoAllocateIrp``: a new IRP with *stack_size* locations, owned by the calling driver.

    *stack_size* must be at least the ``stack_size`` of the device the IRP will be sent to, one more
    if the driver wants a location of its own (:meth:`~airp.Irp.set_next_stack_location`).  Fill the
    next location, set a completion routine, send it with :func:`send_irp` (or
    :func:`~airp.call_driver`); the completion routine must return STATUS_MORE_PROCESSING_REQUIRED
    and the driver then frees (:func:`free_irp`) or reuses (:func:`reuse_irp`) the IRP.  If the walk
    reaches the top instead, bug check 0x2A is raised there (reference 5.8).

    The IRP is charged to no requester (its ``owner`` is ``None``): it belongs to the driver.

    Allocation failure is a normal outcome for a driver, not an exception: as in Windows the call
    returns ``None`` (only when the allocator's low-resources simulation says so), and the driver
    completes the request it was serving with STATUS_INSUFFICIENT_RESOURCES.

    :param stack_size: number of stack locations, 1 to 127.
    :param charge_quota: charge the requester's quota (``ChargeQuota``): bypasses the lookaside lists.
    :param allocator: the :class:`IrpAllocator` whose lookaside lists, statistics and low-resources
        simulation to use; ``None`` allocates a new IRP every time, with none of them.
    :returns: the IRP, or ``None`` if the allocation failed.
    :raises TypeError: if *stack_size* is not an int, or *allocator* not an IrpAllocator.
    :raises ValueError: if *stack_size* is outside 1 to 127.
    """
    if allocator is not None:
        if type(allocator) is not IrpAllocator and not isinstance(allocator, IrpAllocator):
            raise must_be("allocate_irp(stack_size, allocator=...): allocator", "an airp.IrpAllocator or None", allocator)
        return allocator._allocate(stack_size, charge_quota, _Origin.ALLOCATED, "allocate_irp")
    if type(stack_size) is not int or not 1 <= stack_size <= MAX_STACK_SIZE:
        _check_stack_size(stack_size)
    irp = Irp(stack_size)
    d = irp.__dict__
    d[_KIND] = _PLAIN_KINDS[_Origin.ALLOCATED]
    if charge_quota:
        d["allocation_flags"] = _QUOTA_CHARGED
    elif stack_size <= LOOKASIDE_MAX_LOCATIONS:
        d["allocation_flags"] = _FIXED_SIZE
    irp._final_stage = _creator_rule_violated
    if current_request.get() is not None:
        _watch_as_child(irp)
    return irp


# -- the rule of 5.8 ---------------------------------------------------------------------------------


def _creator_rule_violated(irp: Irp) -> None:
    """The final stage of a driver-allocated IRP: there is none (reference 5.8).

    Bug check choice: Windows has no code for this rule.  What it does is undefined: the final stage
    queues the completion APC to the IRP's thread, which is NULL for IoAllocateIrp (or an unrelated
    thread), writes through a stale UserIosb and frees memory the driver still owns, and the machine
    stops later with whatever code the corruption produces.  airp raises INCONSISTENT_IRP (0x2A,
    parameter 1 = the IRP), whose definition is exactly this situation: the I/O manager met an IRP
    whose state contradicts its other fields (an IRP with no requester, owned by a driver, reaching
    the stage that hands an IRP back to its requester).  0x44 would claim a double completion that
    has not happened, and 0xC9 has no parameter for it.

    Except when the walk began where the IRP was already back with its creator (its routine had
    returned STATUS_MORE_PROCESSING_REQUIRED) and the creator has freed it, or the code completing
    it is seen to be a lower driver's (:func:`_second_completer`): that is a second completion,
    0x44, naming that driver, whatever the creator did.  Without either, the creator completing an
    IRP it took back stays 0x2A.
    """
    d = irp.__dict__
    start: int | None = d.pop(WALK_START, None)
    if start is not None and start >= d.get(_CREATOR, irp.stack_count):
        # The walk began where the IRP was already back with its creator: a completion after the
        # one that brought it back.  If the creator freed it, or the code completing it now is a
        # lower driver's, working on this IRP, that is a second completion (0x44), not the
        # creator's breach of 5.8, whatever the creator's routine did.
        completer = _second_completer(irp, start)
        if _FREED in d or completer is not None:
            d.pop(LAST_ROUTINE, None)
            _completed_after_hand_back(irp, completer)
    kind = _kind(irp)
    made_by = _ORIGIN_NAMES[kind.origin] if kind is not None else "allocate_irp"
    raise BugCheck(
        BugCheckCode.INCONSISTENT_IRP,
        f"the completion of an IRP created by its driver ({made_by}) reached the I/O manager's final stage:"
        " the creator's completion routine (set on the next location before sending) must return"
        " STATUS_MORE_PROCESSING_REQUIRED and then free or reuse the IRP, because a driver-allocated IRP"
        f" has no requester to be handed back to (reference 5.8). {_what_went_wrong(irp)} Final status"
        f" {NtStatus(irp.status).name}",
        parameters=(irp, 0, 0, 0),
        irp=irp,
    )


def _second_completer(irp: Irp, start: int) -> DeviceObject | None:
    """The device, below *start*, whose code is completing *irp* now, if the call stack shows it.

    Looked for only on the way to a bug check: the first frame outside the IRP machine that works
    on this very IRP (holds it in a local) for a device (its ``device`` local, as in dispatch and
    StartIo routines, and in :func:`~airp.call_driver` itself) that had the IRP at a location
    below *start*: a driver the IRP has already left.  ``None`` when no frame says so (a
    completion from code that names neither).
    """
    below = [loc.device for loc in irp._stack[:start] if loc is not _UNUSED and loc.device is not None]
    if not below:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if not frame.f_globals.get("__name__", "").startswith("airp._machine."):
            local = frame.f_locals
            device = local.get("device")
            if device is not None and any(device is other for other in below) and any(value is irp for value in local.values()):
                found: DeviceObject = device
                return found
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _completed_after_hand_back(irp: Irp, completer: DeviceObject | None) -> None:
    """Bug check 0x44 for a completion of a driver-allocated IRP that was already back with its creator."""
    d = irp.__dict__
    routine = d.get(_ROUTINE)
    taken = f" (its completion routine {_routine_name(routine)} returned STATUS_MORE_PROCESSING_REQUIRED)" if routine is not None else ""
    freed = " and freed it (free_irp)" if _FREED in d else ""
    who = (
        f"{completer!r} (driver {completer.driver!r}), which had already completed it or passed it up, completed it again"
        if completer is not None
        else "complete_request was called on it again"
    )
    raise BugCheck(
        BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS,
        f"an IRP was completed twice: its completion had already reached its creator{taken}, which took it back{freed};"
        f" then {who}. After complete_request the IRP is no longer the completing driver's, and a driver-allocated"
        " IRP back with its creator is only freed or reused, never completed (reference 5.8)",
        parameters=(irp, 0, 0, 0),
        irp=irp,
        device=completer,
        driver=completer.driver if completer is not None else None,
    )


def _routine_name(routine: object) -> str:
    return getattr(routine, "__qualname__", None) or repr(routine)


def _result_name(result: object) -> str:
    if isinstance(result, int) and not isinstance(result, bool):
        if result == 0:
            return "STATUS_CONTINUE_COMPLETION (0, STATUS_SUCCESS)"
        try:
            return NtStatus(result).name
        except ValueError:
            return f"{result:#x}"
    return repr(result)


def _what_went_wrong(irp: Irp) -> str:
    """The sentence of the 5.8 message that names the creator's routine and what it returned.

    Two records meet here: the completion walk's (:data:`~airp._machine._completion.LAST_ROUTINE`:
    the last routine that ran on the way up and its result, on every path) and send_irp's (the
    routine the creator had set when it sent the IRP, only for IRPs sent through it).  With the
    second, the walk's routine is known to be the creator's or a lower driver's; without it (plain
    call_driver), a routine that ran at the very top (for no device) is the creator's, and one
    that ran for a device is named as the last routine with both readings.
    """
    d = irp.__dict__
    sent = d.get(_ROUTINE, d)  # the dict itself: "not sent through send_irp"
    last: tuple[object, object, object] | None = d.pop(LAST_ROUTINE, None)
    if last is None:
        if sent is None:
            return "No completion routine was set before the IRP was sent, and none ran on the way up."
        if sent is not d:
            return (
                f"Its completion routine {_routine_name(sent)} did not run in the completion that reached the"
                " top: it had returned STATUS_MORE_PROCESSING_REQUIRED and the driver completed the IRP again"
                " after taking it back, or its on_success / on_error / on_cancel flags left it out for this status."
            )
        return (
            "No completion routine ran on the way up: none was set on the location the creator filled, its"
            " on_success / on_error / on_cancel flags left it out for this status, or it had returned"
            " STATUS_MORE_PROCESSING_REQUIRED and the driver completed the IRP again after taking it back."
        )
    routine, result, device = last
    returned = f"returned {_result_name(result)}"
    if sent is routine or (sent is d and device is None):
        return f"Its completion routine {_routine_name(routine)} {returned} instead of STATUS_MORE_PROCESSING_REQUIRED."
    if sent is None:
        return (
            f"No completion routine was set before the IRP was sent: the last routine that ran, {_routine_name(routine)}"
            f" (a lower driver's, for {device!r}), {returned} and the walk went on to the top."
        )
    if sent is not d:
        return (
            f"Its completion routine {_routine_name(sent)} did not run (its on_success / on_error / on_cancel flags"
            f" left it out for this status): the last routine that ran, {_routine_name(routine)} (for {device!r}),"
            f" {returned}."
        )
    return (
        f"The last completion routine that ran on the way up, {_routine_name(routine)} (for {device!r}), {returned}:"
        " if it is the creator's (a creator with a location of its own), it must return"
        " STATUS_MORE_PROCESSING_REQUIRED; if it is a lower driver's, the creator set none."
    )


_install_creator_final_stage(_creator_rule_violated)


def _discard(irp: Irp) -> None:
    """Give back an IRP that was allocated for a build that then failed (bad arguments)."""
    d = irp.__dict__
    kind: _Kind | None = d.get(_KIND)
    if kind is None or _FREED in d:
        return
    d[_FREED] = True
    if kind.allocator is not None:
        kind.allocator._release(irp, d.get("allocation_flags", 0))


def _freed_by_io_manager(irp: Irp) -> None:
    """The I/O manager's free at the end of an associated or built synchronous IRP's completion."""
    d = irp.__dict__
    kind: _Kind | None = d.get(_KIND)
    if kind is None or _FREED in d:
        return
    d[_FREED] = True
    if kind.allocator is not None:
        kind.allocator._released_by_io_manager()


def _forget(irp: Irp) -> None:
    """Take *irp* off its master's list of outstanding associated IRPs."""
    master: Irp | None = irp.__dict__.pop(_MASTER, None)
    if master is None:
        return
    outstanding: dict[Irp, None] | None = master.__dict__.get(_OUTSTANDING)
    if outstanding is not None:
        outstanding.pop(irp, None)


# -- freeing and reusing ------------------------------------------------------------------------------

_INVOKE_BITS: Final = 0xE0


def _in_use(irp: Irp) -> bool:
    """True while a driver below the creator holds *irp* (sent, not handed back yet).

    Once the creator's location is known, exactly: the IRP is in use while its current location
    is below it.  It is known from the first :func:`send_irp` (the highest location it was sent
    from: forwarding drivers below send from lower ones) and from :meth:`IrpPool.get
    <airp.IrpPool.get>`, and forgotten by a reuse.

    Otherwise (an IRP sent with plain :func:`~airp.call_driver`, or never sent) it is read from the
    geometry, as ``IoFreeIrp`` does (reference 2.3): ``CurrentLocation < StackCount`` means a lower
    driver's location is current.  ``CurrentLocation == StackCount`` is either the first lower
    driver's location (an IRP sent without a location of the creator's) or the creator's own
    (after :meth:`~airp.Irp.set_next_stack_location`); only a completion routine of the creator's
    there tells the first apart, so an IRP sent that way *without* a completion routine (itself a
    breach of reference 5.8) is not seen as in use.  :func:`free_irp` then at least keeps it off
    the lookaside lists (:func:`_back_with_creator`).
    """
    index = irp._index
    n = irp.stack_count
    if index >= n:
        return False
    creator = irp.__dict__.get(_CREATOR)
    if creator is not None and index < creator:
        return True
    if index < n - 1:
        return True
    top = irp._stack[n - 1]
    return top.completion_routine is not None or bool(top.control & _INVOKE_BITS)


def _back_with_creator(irp: Irp) -> bool:
    """True if no lower driver can hold *irp*: the only IRPs a lookaside list may keep.

    Stricter than ``not _in_use(irp)``: an IRP whose current location might be a lower driver's
    (the case :func:`_in_use` cannot tell apart) is given up rather than handed out again, so a
    late completion by whoever held it lands on an IRP nobody will be given.
    """
    index = irp._index
    if index >= irp.stack_count:
        return True
    creator = irp.__dict__.get(_CREATOR)
    return creator is not None and index >= creator


def _holder(irp: Irp) -> DeviceObject | None:
    index = irp._index
    if index < irp.stack_count:
        return irp._stack[index].device
    return None


def _adopt(irp: Irp, what: str, code: VerifierCode) -> _Kind:
    """The kind of an IRP airp did not allocate: a bare one is the driver's; any other is refused."""
    if irp._final_stage is not None or irp.master_irp is not None or irp.flags & IrpFlags.ASSOCIATED_IRP:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"{what} on {irp!r}, a request the I/O manager built for a requester: the I/O manager"
            " completes and frees it; a driver passes it on or completes it",
            parameters=(code, irp, 0, 0),
            irp=irp,
        )
    # A bare Irp(n) (or IoManager.allocate_irp): the driver made it, so it may free or reuse it.
    kind = irp.__dict__[_KIND] = _PLAIN_KINDS[_Origin.BARE]
    return kind


def _in_use_error(irp: Irp, what: str, code: VerifierCode, advice: str) -> BugCheck:
    holder = _holder(irp)
    why = "a cancel routine is still set" if irp.cancel_routine is not None else f"it is held by {holder!r}"
    return BugCheck(
        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
        f"{what} on an IRP that is still in use ({why}): {advice}",
        parameters=(code, irp, holder, 0),
        irp=irp,
        device=holder,
    )


def free_irp(irp: Irp) -> None:
    """``IoFreeIrp``: give back an IRP this driver allocated, once it is back from the lower drivers.

    Call it from the IRP's completion routine (which then returns STATUS_MORE_PROCESSING_REQUIRED)
    or after waiting for the IRP to be handed back.  A lookaside-sized IRP goes back to its
    allocator's list if there is room, and drops there what it referenced (the devices it went
    through, completion contexts): an idle IRP keeps no removed stack alive.  Afterwards the IRP
    must not be touched.

    Free only what the driver allocated (reference 2.9): IRPs from :func:`allocate_irp`,
    :func:`~airp.build_asynchronous_fsd_request`, a bare ``Irp(n)``, and associated IRPs that were
    never sent.  The I/O manager frees associated IRPs when they complete and built synchronous /
    device-control requests when they complete; a request received from above belongs to its
    requester.

    "Still in use" is judged against the creator's location, which airp knows once the IRP has
    been sent with :func:`send_irp` (or came from an :class:`~airp.IrpPool`): a lower driver holds
    the IRP while its current location is below that one, with or without a completion routine.
    An IRP sent with plain :func:`~airp.call_driver` is judged from its geometry alone (see
    ``IoFreeIrp``'s own check, reference 2.3), which cannot see a lower driver holding an IRP sent
    *without* a completion routine and without a location of the creator's; such an IRP is still
    kept off the lookaside lists, so it is never handed out again while held.

    :raises BugCheck: 0xC9 / 0x01 if *irp* is not an IRP, or was already freed (a freed IRP is no
        longer an IRP: Verifier finds its type field cleared); 0xC9 / 0x02 if the I/O manager frees
        it (a built synchronous or device-control request, which is on its requester's list, or a
        request received from above); 0xC9 / 0x20A if it is still in use: a lower driver holds it or
        a cancel routine is set.
    """
    if not isinstance(irp, Irp):
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"free_irp was given {type(irp).__name__} {irp!r}, which is not an IRP",
            parameters=(VerifierCode.FREE_NON_IRP, irp, 0, 0),
        )
    d = irp.__dict__
    kind: _Kind | None = d.get(_KIND)
    if kind is None or kind.origin > _Origin.ASYNCHRONOUS or _FREED in d or irp.cancel_routine is not None or _in_use(irp):
        kind = _check_free(irp, kind)
    d[_FREED] = True
    monitor = irp._monitor
    if monitor is not None:
        monitor.freed(irp)
    allocator = kind.allocator
    if allocator is not None:
        allocator._release(irp, d.get("allocation_flags", 0))


def _check_free(irp: Irp, kind: _Kind | None) -> _Kind:
    """free_irp's checks, off the fast path: the kind of an IRP that may be freed, or a bug check."""
    if kind is None:
        kind = _adopt(irp, "free_irp", VerifierCode.FREE_IRP_ON_THREAD)
    d = irp.__dict__
    origin = kind.origin
    if _FREED in d:
        by = "the I/O manager when it completed" if origin >= _Origin.ASSOCIATED else "an earlier free_irp"
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"free_irp on an IRP that was already freed (by {by}): a freed IRP is no longer an IRP",
            parameters=(VerifierCode.FREE_NON_IRP, irp, 0, 0),
            irp=irp,
        )
    if origin >= _Origin.SYNCHRONOUS:
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"free_irp on a request made by {_ORIGIN_NAMES[origin]}: it is on its requester's list and the"
            " I/O manager frees it when it completes (reference 2.9); await it instead",
            parameters=(VerifierCode.FREE_IRP_ON_THREAD, irp, 0, 0),
            irp=irp,
        )
    if irp.cancel_routine is not None or _in_use(irp):
        raise _in_use_error(irp, "free_irp", VerifierCode.FREE_IRP_IN_USE, "free it in its completion routine, or after it has been handed back")
    if origin == _Origin.ASSOCIATED:
        _forget(irp)
    return kind


def _reset(irp: Irp, kind: _Kind, status: int) -> None:
    """``IoReuseIrp`` without the checks: reinitialise, keeping the allocation flags and kind."""
    flags = irp.__dict__.get("allocation_flags", 0)
    monitor = irp._monitor
    irp._reinitialize()
    d = irp.__dict__
    d[_KIND] = kind
    if flags:
        d["allocation_flags"] = flags
    if kind.origin == _Origin.ALLOCATED:
        irp._final_stage = _creator_rule_violated
    if status:
        irp.status = status if type(status) is NtStatus else NtStatus(status)
    if monitor is not None:
        monitor.watch(irp)
        monitor.reused(irp)


def reuse_irp(irp: Irp, status: int = STATUS_SUCCESS) -> None:
    """``IoReuseIrp``: make an IRP this driver allocated fresh again, to send another request.

    Everything is reset as by ``IoInitializeIrp`` (stack locations, flags, buffers, cancel flag,
    pending state, driver context) except the allocation flags and the stack size; ``irp.status``
    becomes *status*.  The IRP comes back with no current location, ready for its creator to fill
    the next one.  A tracing monitor keeps watching it (under a new trace number).

    Only for IRPs the driver allocated (:func:`allocate_irp`, a bare ``Irp(n)``), and only while no
    lower driver holds it: typically in its completion routine or after it has been handed back.
    "Holds" is judged as by :func:`free_irp`.

    :param status: the status the reset IRP starts with (``IoStatus.Status``).
    :raises BugCheck: 0xC9 / 0x311 if the IRP was not allocated by the driver (an associated IRP, a
        built request, a request received from above) or has been freed; 0xC9 / 0x310 if it is in
        use: a lower driver holds it or a cancel routine is still set.
    :raises TypeError: if *irp* is not an IRP or *status* not an int.
    """
    if not isinstance(irp, Irp):
        raise TypeError(f"reuse_irp takes an Irp, got {type(irp).__name__} {irp!r}")
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"status must be an NTSTATUS int, got {status!r}")
    _reset(irp, _reusable(irp, "reuse_irp"), status)


def _reusable(irp: Irp, what: str) -> _Kind:
    """The kind of an IRP that may be reused now, or the bug check that says why not."""
    d = irp.__dict__
    kind: _Kind | None = d.get(_KIND)
    if kind is None:
        kind = _adopt(irp, what, VerifierCode.REUSE_NOT_ALLOCATED_IRP)
    elif kind.origin > _Origin.BARE or _FREED in d:
        why = "has been freed: allocate a new one" if _FREED in d else (
            f"was made by {_ORIGIN_NAMES[kind.origin]}: only IRPs the driver allocated may be reused"
            " (reference 2.4); allocate one with allocate_irp"
        )
        raise BugCheck(
            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            f"{what} on an IRP that {why}",
            parameters=(VerifierCode.REUSE_NOT_ALLOCATED_IRP, irp, 0, 0),
            irp=irp,
        )
    if irp.cancel_routine is not None or _in_use(irp):
        raise _in_use_error(irp, what, VerifierCode.REINITIALIZE_IRP_IN_USE, "reuse it in its completion routine, or after it has been handed back")
    return kind

