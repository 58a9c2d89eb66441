"""Small drivers shared by the tests of driver-created IRPs (issue #3)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    complete_request,
)

T = TypeVar("T")

#: Every major function, so one driver answers whatever a test sends.
ALL_MAJORS = tuple(IrpMajor(m) for m in range(0x1C))


class Completer(airp.Driver):
    """Completes every request at once with :attr:`status` and :attr:`information`.

    For reads it fills the request's buffer (system buffer, MDL or user buffer) with :attr:`data`.
    """

    def __init__(self, status: int = STATUS_SUCCESS, information: int = 0, data: bytes = b"") -> None:
        super().__init__("completer")
        self.status = status
        self.information = information
        self.data = data
        self.seen: list[Irp] = []
        for major in ALL_MAJORS:
            self.set_dispatch(major, self._complete)

    async def _complete(self, device: DeviceObject, irp: Irp) -> int:
        self.seen.append(irp)
        information = self.information
        if self.data and irp.current_stack_location.major == IrpMajor.READ:
            target: Any = irp.system_buffer if irp.system_buffer is not None else irp.mdl
            if target is None:
                target = irp.user_buffer
            count = min(len(self.data), len(target))
            target[:count] = self.data[:count]
            information = count
        complete_request(irp, self.status, information)
        return self.status


class Holder(airp.Driver):
    """Pends every request (with a cancel routine) until the test completes it.

    :ivar held: the requests held, oldest first.
    """

    def __init__(self, *, cancelable: bool = True) -> None:
        super().__init__("holder")
        self.cancelable = cancelable
        self.held: list[Irp] = []
        for major in ALL_MAJORS:
            self.set_dispatch(major, self._hold)

    async def _hold(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        if self.cancelable:
            irp.set_cancel_routine(self._cancel)
        return STATUS_PENDING

    def _cancel(self, device: DeviceObject | None, irp: Irp) -> None:
        self.held.remove(irp)
        complete_request(irp, STATUS_CANCELLED, 0)

    def complete(self, irp: Irp | None = None, status: int = STATUS_SUCCESS, information: int = 0) -> Irp:
        """Complete *irp* (default: the oldest held request); returns it."""
        if irp is None:
            irp = self.held[0]
        self.held.remove(irp)
        irp.set_cancel_routine(None)
        complete_request(irp, status, information)
        return irp


def make_device(driver: airp.Driver, *, flags: int = 0, io: airp.IoManager | None = None) -> DeviceObject:
    """A device of *driver* in a fresh (or the given) I/O manager."""
    return (io or airp.IoManager()).create_device(driver, flags=flags)


def take_back(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    """A creator's completion routine that records the call and keeps the IRP."""
    context.append((device, irp.status))
    return STATUS_MORE_PROCESSING_REQUIRED


def fill_read(irp: Irp, length: int = 16) -> Irp:
    """Fill the next location of *irp* as a read of *length* bytes."""
    loc = irp.next_stack_location
    loc.major = IrpMajor.READ
    loc.parameters = airp.ReadWriteParameters(length)
    return irp


EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    module_name = f"airp_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def must(irp: T | None) -> T:
    """*irp*, asserting that the allocation (or build) that produced it did not fail."""
    assert irp is not None, "the allocation failed"
    return irp
