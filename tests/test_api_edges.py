"""Issue 10, items 4, 5, 7, 10, 11, 13 and 15: API edges, each tried from the user's side.

Each test is written as a driver author, a requester or a test author would meet the edge: a filter
switched to pass-through after its devices exist, a typed device extension, a cancel-wait limit set
before the run, a forgotten ``await``, a driver's own IRP cancelled with the request it serves, and
the first example of ``docs/testing.md`` run as written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _own_irp_drivers import load_example

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    complete_request,
)
from airp.testing import VirtualClock

ROOT = Path(__file__).resolve().parent.parent


# -- drivers used below --------------------------------------------------------------------------


class Disk(airp.Driver):
    """Answers CREATE/CLEANUP/CLOSE and reads with b"disk"."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert irp.system_buffer is not None
        irp.system_buffer[:4] = b"disk"
        complete_request(irp, STATUS_SUCCESS, 4)
        return STATUS_SUCCESS


class Filter(airp.Driver):
    """A filter that handles nothing itself: what it does with a request is ``pass_through``'s."""


class Holder(airp.Driver):
    """Pends every read and never completes it, and sets no cancel routine: it ignores cancels."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        return STATUS_PENDING


def filtered_stack(io: airp.IoManager) -> tuple[Filter, DeviceObject]:
    disk = io.create_device(Disk(), "\\Device\\Disk0", flags=airp.DeviceFlags.BUFFERED_IO)
    filter_driver = Filter()
    top = io.create_device(filter_driver, "\\Device\\Filtered")
    airp.attach_device(top, disk)
    return filter_driver, top


# -- item 4: pass_through set after construction --------------------------------------------------


@pytest.mark.anyio
async def test_pass_through_set_after_the_devices_exist_takes_effect() -> None:
    io = airp.IoManager()
    filter_driver, _ = filtered_stack(io)
    filter_driver.pass_through = True  # after __init__, after create_device and attach_device
    async with io.open("\\Device\\Filtered") as handle:
        assert await handle.read(4) == b"disk"
        # And back: the default entry reads the flag at each call.
        filter_driver.pass_through = False
        with pytest.raises(airp.NtStatusError) as failed:
            await handle.read(4)
        assert failed.value.status == STATUS_INVALID_DEVICE_REQUEST
        filter_driver.pass_through = True  # so that CLEANUP and CLOSE reach the disk again


@pytest.mark.anyio
async def test_pass_through_on_one_driver_object_leaves_its_routines_and_other_drivers_alone() -> None:
    io = airp.IoManager()
    first, _ = filtered_stack(io)
    other = Filter()
    first.pass_through = True
    assert other.pass_through is False
    assert Filter.pass_through is False
    seen: list[int] = []

    async def own_read(device: DeviceObject, irp: Irp) -> int:
        seen.append(irp.current_stack_location.major)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    first.set_dispatch(IrpMajor.READ, own_read)
    async with io.open("\\Device\\Filtered") as handle:
        assert await handle.read(4) == b""  # its own READ routine, not the pass-down
    assert seen == [IrpMajor.READ]


# -- item 5: one way for a driver, a named one for a requester ------------------------------------


def test_new_traced_irp_is_a_requesters_plain_irp_and_allocate_irp_is_its_deprecated_name() -> None:
    monitor = airp.IrpMonitor()
    io = airp.IoManager(monitor=monitor)
    irp = io.new_traced_irp(2)
    assert irp._monitor is monitor
    assert irp.stack_count == 2
    # A plain IRP: not driver-allocated, so the 5.8 rule does not apply; it completes normally.
    irp.next_stack_location.major = IrpMajor.READ
    complete_request(irp, STATUS_SUCCESS, 0)
    assert irp.completed
    with pytest.warns(DeprecationWarning, match=r"new_traced_irp.*airp\.allocate_irp"):
        old = io.allocate_irp(3)
    assert old.stack_count == 3
    assert old._monitor is monitor


@pytest.mark.anyio
async def test_allocate_irp_is_the_drivers_ioallocateirp_with_the_5_8_rule() -> None:
    # The one way for a driver: the creator's routine returns STATUS_MORE_PROCESSING_REQUIRED.
    io = airp.IoManager()
    disk = io.create_device(Disk(), "\\Device\\D", flags=airp.DeviceFlags.BUFFERED_IO)
    own = airp.allocate_irp(disk.stack_size)
    assert own is not None
    own.next_stack_location.major = IrpMajor.CREATE
    results: list[int] = []

    def done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        results.append(irp.status)
        airp.free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    own.set_completion_routine(done)
    assert await airp.send_irp(disk, own) == STATUS_SUCCESS
    assert results == [STATUS_SUCCESS]


# -- item 7: a typed device extension ------------------------------------------------------------


class Counters:
    def __init__(self, device: DeviceObject[Counters]) -> None:
        self.device = device
        self.reads = 0


class CountingDisk(Disk):
    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject[Counters], irp: Irp) -> int:
        device.extension.reads += 1  # typed: no cast, no ignore
        return await super().read(device, irp)


@pytest.mark.anyio
async def test_make_extension_builds_the_extension_from_its_device() -> None:
    io = airp.IoManager()
    device = io.create_device(CountingDisk(), "\\Device\\C", flags=airp.DeviceFlags.BUFFERED_IO, make_extension=Counters)
    counters: Counters = device.extension
    assert counters.device is device
    async with io.open("\\Device\\C") as handle:
        await handle.read(4)
        await handle.read(4)
    assert device.extension.reads == 2


def test_extension_value_and_bad_extension_arguments() -> None:
    io = airp.IoManager()
    driver = Disk()
    device = io.create_device(driver, "\\Device\\V", extension={"blocks": 8})
    assert device.extension == {"blocks": 8}
    with pytest.raises(TypeError, match="extension= or make_extension=, not both"):
        io.create_device(driver, "\\Device\\W", extension=1, make_extension=lambda d: 2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="make_extension is a callable"):
        io.create_device(driver, "\\Device\\W", make_extension=5)  # type: ignore[call-overload]

    def broken(device: DeviceObject[int]) -> int:
        raise RuntimeError("no memory for the extension")

    with pytest.raises(RuntimeError, match="no memory"):
        io.create_device(driver, "\\Device\\W", make_extension=broken)
    # A failed extension leaves no half-made device behind.
    assert io.device_names == ["\\Device\\V"]
    assert driver.devices == [device]


def test_examples_drivers_and_docs_need_no_type_ignore() -> None:
    # The sweep of issue 10: each `# type: ignore` there was a place where the API made a user
    # fight the type checker.
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("examples", "drivers", "docs")
        for path in sorted((ROOT / folder).rglob("*"))
        if path.suffix in (".py", ".md")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "# type: ignore" in line
    ]
    assert found == []


# -- item 10: the cancel-wait limit where users configure things ----------------------------------


@pytest.mark.anyio
async def test_io_manager_cancel_wait_limit_is_given_before_the_run(virtual_clock: VirtualClock) -> None:
    # Made before anything runs, as an application's setup or a plain fixture would.
    io = airp.IoManager(cancel_wait_limit=30)
    holder = Holder()
    io.create_device(holder, "\\Device\\Holder")
    async with io.open("\\Device\\Holder") as handle:
        with pytest.warns(airp.DriverCancelTimeoutWarning, match="within 30 s"), pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                await handle.read(8)
        assert virtual_clock.now() == 31  # 1 s to the deadline, 30 s of cancel-wait, not 300
    assert holder.held[0].owner is None  # disowned, and reported against the holder's device


@pytest.mark.anyio
async def test_the_managers_limit_wins_over_the_runs_and_the_runs_applies_elsewhere(virtual_clock: VirtualClock) -> None:
    configured = airp.IoManager(cancel_wait_limit=20)
    plain = airp.IoManager()
    for io in (configured, plain):
        io.create_device(Holder(), "\\Device\\Holder")
    airp.set_cancel_wait_limit(5)
    assert airp.get_cancel_wait_limit() == 5
    for io, waited in ((configured, 20), (plain, 5)):
        start = virtual_clock.now()
        handle = await io.open("\\Device\\Holder")
        with pytest.warns(airp.DriverCancelTimeoutWarning), pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                await handle.read(8)
        assert virtual_clock.now() - start == 1 + waited
        await handle.close()


def test_io_manager_refuses_a_bad_cancel_wait_limit() -> None:
    with pytest.raises(ValueError, match="cancel_wait_limit must be a number of seconds >= 0"):
        airp.IoManager(cancel_wait_limit=-1)
    with pytest.raises(TypeError, match="cancel_wait_limit must be a number"):
        airp.IoManager(cancel_wait_limit="30")  # type: ignore[arg-type]
    assert airp.IoManager(cancel_wait_limit=math.inf).cancel_wait_limit == math.inf


def test_pytest_ini_option_sets_the_limit_every_run_starts_with(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nairp_cancel_wait_limit = 30\n")
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
        import pytest
        import airp

        @pytest.mark.anyio
        async def test_limit():
            assert airp.get_cancel_wait_limit() == 30
            airp.set_cancel_wait_limit(2)        # the run's own setting still wins
            assert airp.get_cancel_wait_limit() == 2

        @pytest.mark.anyio
        async def test_next_run_starts_from_the_ini_again():
            assert airp.get_cancel_wait_limit() == 30
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_pytest_ini_option_with_a_bad_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nairp_cancel_wait_limit = soon\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*airp_cancel_wait_limit = 'soon'*a number of seconds >= 0*"])


# -- item 11: a forgotten await ---------------------------------------------------------------------


async def an_irp() -> Irp:
    return Irp(1)


def test_a_coroutine_in_place_of_an_irp_names_the_missing_await() -> None:
    parent = Irp(2)
    calls: list[Callable[[Any], object]] = [
        lambda coro: airp.cancel_with(parent, coro),
        lambda coro: airp.cancel_with(coro, parent),
        lambda coro: airp.make_associated_irp(coro, 1),
        lambda coro: airp.arm_master_cancel(coro),
    ]
    for call in calls:
        coro = an_irp()
        try:
            with pytest.raises(TypeError, match=r"coroutine \(an_irp\).*the `await` is missing"):
                call(coro)
        finally:
            coro.close()


def test_the_core_calls_name_a_missing_await_too() -> None:
    for call in (airp.cancel_irp, airp.complete_request):
        coro = an_irp()
        try:
            with pytest.raises(TypeError, match=r"coroutine \(an_irp\).*the `await` is missing"):
                call(coro)
        finally:
            coro.close()


@pytest.mark.anyio
async def test_call_driver_and_wait_for_irp_name_a_missing_await(virtual_clock: Any) -> None:
    io = airp.IoManager()
    device = io.create_device(airp.Driver())
    coro = an_irp()
    try:
        with pytest.raises(airp.BugCheck, match=r"the `await` is missing"):
            await airp.call_driver(device, coro)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"the `await` is missing"):
            await airp.wait_for_irp(coro)  # type: ignore[arg-type]
    finally:
        coro.close()


def test_an_overlapped_in_place_of_an_irp_says_to_pass_its_irp() -> None:
    class FakeOverlapped:  # what a handle's *_overlapped call returns, as far as the check goes
        irp = Irp(1)
        status_returned = STATUS_PENDING

    with pytest.raises(TypeError, match=r"an Overlapped request; pass its `\.irp`"):
        airp.cancel_with(Irp(2), FakeOverlapped())  # type: ignore[arg-type]


# -- item 13: a parent's cancel cancels the driver's own child IRP ----------------------------------


class CancelableLower(airp.Driver):
    """Pends every request with a cancel routine (arm, then recheck)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        irp.set_cancel_routine(self.cancelled)
        if irp.cancel and irp.set_cancel_routine(None) is not None:
            complete_request(irp, STATUS_CANCELLED, 0)
        else:
            self.held.append(irp)
        return STATUS_PENDING

    @staticmethod
    def cancelled(device: DeviceObject | None, irp: Irp) -> None:
        complete_request(irp, STATUS_CANCELLED, 0)


def pended_parent(device: DeviceObject) -> Irp:
    parent = Irp(2)
    parent.next_stack_location.major = IrpMajor.READ
    parent.set_next_stack_location()
    parent.current_stack_location.device = device
    parent.mark_pending()
    return parent


def own_child(lower: DeviceObject, parent: Irp, finished: list[int], children: int = 1) -> Irp:
    child = airp.allocate_irp(lower.stack_size)
    assert child is not None
    child.next_stack_location.major = IrpMajor.READ

    def done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        assert parent.cancel_routine is None  # untied before this routine runs
        finished.append(irp.status)
        if len(finished) == context:
            complete_request(parent, irp.status, 0)
        airp.free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    child.set_completion_routine(done, children)
    return child


@pytest.mark.anyio
async def test_cancelling_the_parent_cancels_every_tied_child_and_then_completes_it() -> None:
    io = airp.IoManager()
    lower_driver = CancelableLower()
    lower = io.create_device(lower_driver, "\\Device\\Lower")
    parent = pended_parent(io.create_device(Filter(), "\\Device\\Upper"))
    finished: list[int] = []
    children = [own_child(lower, parent, finished, 2) for _ in range(2)]
    for child in children:
        airp.cancel_with(parent, child)
        assert await airp.send_irp(lower, child) == STATUS_PENDING
    assert parent.cancel_routine is not None
    assert airp.cancel_irp(parent) is True
    assert finished == [STATUS_CANCELLED, STATUS_CANCELLED]
    assert parent.completed
    assert parent.status == STATUS_CANCELLED


@pytest.mark.anyio
async def test_a_parent_cancelled_before_the_tie_cancels_the_child_at_once() -> None:
    io = airp.IoManager()
    lower = io.create_device(CancelableLower(), "\\Device\\Lower")
    parent = pended_parent(io.create_device(Filter(), "\\Device\\Upper"))
    airp.cancel_irp(parent)  # no routine yet: only the flag
    finished: list[int] = []
    child = own_child(lower, parent, finished)
    airp.cancel_with(parent, child)  # arm, recheck: the child is marked cancelled before it is sent
    assert child.cancel
    assert parent.cancel_routine is None
    await airp.send_irp(lower, child)  # the lower driver's own recheck completes it as cancelled
    assert finished == [STATUS_CANCELLED]
    assert parent.status == STATUS_CANCELLED


@pytest.mark.anyio
async def test_a_child_that_completes_unties_itself_so_the_parent_completes_cleanly() -> None:
    io = airp.IoManager()
    lower_driver = CancelableLower()
    lower = io.create_device(lower_driver, "\\Device\\Lower")
    parent = pended_parent(io.create_device(Filter(), "\\Device\\Upper"))
    finished: list[int] = []
    child = own_child(lower, parent, finished)
    airp.cancel_with(parent, child)
    await airp.send_irp(lower, child)
    held = lower_driver.held.pop()
    assert held.set_cancel_routine(None) is not None
    complete_request(held, STATUS_SUCCESS, 0)  # no bug check 0xC9 / 0x07 for the parent
    assert finished == [STATUS_SUCCESS]
    assert parent.status == STATUS_SUCCESS
    assert not parent.cancel


def test_cancel_with_refuses_what_it_cannot_tie() -> None:
    parent = Irp(2)
    parent.set_next_stack_location()
    bare = Irp(1)
    with pytest.raises(airp.IrpStateError, match="set the child's completion routine first"):
        airp.cancel_with(parent, bare)
    with pytest.raises(ValueError, match="itself"):
        airp.cancel_with(parent, parent)
    child = Irp(1)
    child.set_completion_routine(lambda d, i, c: STATUS_MORE_PROCESSING_REQUIRED)
    parent.set_cancel_routine(lambda d, i: None)
    with pytest.raises(airp.IrpStateError, match="already has cancel routine"):
        airp.cancel_with(parent, child)


own_irp = load_example("own_irp_per_request")


@pytest.mark.anyio
@pytest.mark.parametrize("variant", ["allocate", "pool"])
async def test_the_example_driver_cancels_its_transfer_when_the_read_is_cancelled(
    variant: str, virtual_clock: VirtualClock
) -> None:
    # The bus never answers here (no hardware task): only the read's cancel can end it.
    io = airp.IoManager()
    bus_driver = own_irp.UsbBus()
    bus_driver.start()
    try:
        bus = io.create_device(bus_driver, "\\Device\\UsbBus0")
        allocator = airp.IrpAllocator()

        def make_source(device: DeviceObject[Any]) -> Any:
            return own_irp.AllocateAndFree(bus, allocator) if variant == "allocate" else own_irp.Pooled(device, allocator, bus)

        reader = io.create_device(own_irp.ReportReader(), "\\Device\\R", flags=airp.DeviceFlags.BUFFERED_IO, make_extension=make_source)
        airp.attach_device(reader, bus)
        async with io.open("\\Device\\R") as handle:
            with pytest.raises(TimeoutError):
                with anyio.fail_after(2):
                    await handle.read(16)
            assert virtual_clock.now() == 2  # the transfer came back cancelled at once: no cancel-wait
            assert handle.io.outstanding_requests() == []
        if variant == "pool":
            reader.extension.pool.close()
        assert allocator.statistics().outstanding == 0
    finally:
        bus_driver.stop()


# -- item 15: docs/testing.md's first example, as written ------------------------------------------


def docs_testing_first_example() -> str:
    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(str(b) for b in blocks if "test_read_times_out" in b)


@pytest.mark.anyio
async def test_docs_testing_first_example_is_true_as_written(virtual_clock: VirtualClock) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(docs_testing_first_example(), "docs/testing.md", "exec"), namespace)
    await namespace["test_read_times_out"](virtual_clock)


def test_docs_and_examples_open_handles_one_way() -> None:
    # Code writes `async with io.open(...)`, never `async with await io.open(...)` (which works,
    # as docs/testing.md says in prose, but adds nothing).
    for folder in ("docs", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".md", ".py"):
                code = [line.strip() for line in path.read_text().splitlines()]
                assert not [line for line in code if line.startswith("async with await io.open")], path


def docs_block(page: str, marker: str) -> str:
    text = (ROOT / "docs" / page).read_text()
    return next(str(b) for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b)


def test_docs_plugins_filter_example_is_a_driver_a_plugin_could_publish() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(docs_block("plugins.md", "class CountingFilter"), "docs/plugins.md", "exec"), namespace)
    counting = namespace["CountingFilter"]()
    assert isinstance(counting, airp.Driver)
    assert counting.pass_through is True


@pytest.mark.anyio
async def test_docs_plugins_stack_is_built_from_the_installed_entry_points() -> None:
    assert {"demo-bus", "pass-through-filter", "ramdisk", "audit-filter"} <= set(airp.available_drivers())
    namespace: dict[str, Any] = {}
    exec(compile(docs_block("plugins.md", "def build_stack"), "docs/plugins.md", "exec"), namespace)
    await namespace["main"]()
    with pytest.raises(LookupError, match="no airp driver plugin named 'nope'"):
        airp.load_driver("nope")
