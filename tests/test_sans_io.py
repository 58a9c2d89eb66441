"""DESIGN layer 1: the IRP machine imports and runs without anyio, with no event loop at all.

A subprocess makes every import of anyio, trio, sniffio and asyncio fail (a ``sys.meta_path``
finder that raises ImportError), imports every module of ``airp._machine`` from the real files,
and runs the worked example of reference 5.9 (A over B over C) through it with tiny drivers whose
dispatch coroutines never suspend, driven by hand with ``coro.send(None)``.

Why a stand-in for the package front, and only for it: Python always runs a package's
``__init__`` before any of its submodules, and ``airp/__init__.py`` is the public front, which
re-exports every layer, the async shell included, so it needs anyio by design.  The subprocess
therefore puts a bare module named ``airp`` into ``sys.modules`` whose ``__path__`` is the real
package directory.  Everything below it is real: ``airp/_machine/__init__.py`` runs as it is,
and every module found in ``airp/_machine/`` is imported from its own file, so a machine module
added later is covered without touching this test.  (The layering test checks the same rule
statically, for every kind of import; this one checks that the imports that execute agree, and
that the machine works alone.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import airp

PACKAGE_DIR = Path(airp.__file__).parent

CHILD = r'''
import importlib
import importlib.abc
import pkgutil
import sys
import types

BLOCKED = {"anyio", "trio", "sniffio", "asyncio"}


class NoEventLoop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the IRP machine must not need it")
        return None


sys.meta_path.insert(0, NoEventLoop())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
try:
    import anyio  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("the blocker does not block")

# The front only (see the test's docstring): a bare `airp` over the real package directory.
front = types.ModuleType("airp")
front.__path__ = [sys.argv[1]]
sys.modules["airp"] = front

import airp._machine

assert airp._machine.__file__.startswith(sys.argv[1]), airp._machine.__file__
modules = sorted(m.name for m in pkgutil.iter_modules(airp._machine.__path__, "airp._machine."))
assert len(modules) >= 15, modules
for name in modules:
    importlib.import_module(name)

from airp._machine._codes import IrpMajor
from airp._machine._completion import complete_request
from airp._machine._device import DeviceObject, attach_device
from airp._machine._devqueue import DeviceQueue
from airp._machine._driver import Driver, dispatch
from airp._machine._irp import _UNUSED, Irp, ReadWriteParameters
from airp._machine._status import STATUS_CONTINUE_COMPLETION, STATUS_PENDING, STATUS_SUCCESS, IoStatus


def call(device, irp):
    """IofCallDriver (reference 3) by hand, since the shell's call_driver is not imported:
    CurrentLocation -= 1, record the device there, return the dispatch routine's coroutine."""
    irp.set_next_stack_location()
    location = irp.current_stack_location
    location.device = device
    return device.driver.major_function[location.major](device, irp)


seen = []


class A(Driver):
    """Copies its location to the next, arms RA (all three flags), calls B."""

    @dispatch(IrpMajor.READ)
    async def read(self, device, irp):
        seen.append(("A", irp.current_location))
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.ra)
        return await call(device.lower_device, irp)

    def ra(self, device, irp, context):
        seen.append(("RA", device.name, irp.pending_returned, irp.current_location))
        if irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION


class B(Driver):
    """Skips its location and calls C: it gets no completion callback."""

    @dispatch(IrpMajor.READ)
    async def read(self, device, irp):
        seen.append(("B", irp.current_location))
        irp.skip_current_stack_location()
        return await call(device.lower_device, irp)


class C(Driver):
    """Marks its location pending, queues the IRP (a KDEVICE_QUEUE), returns STATUS_PENDING."""

    def __init__(self):
        super().__init__()
        self.queue = DeviceQueue()

    @dispatch(IrpMajor.READ)
    async def read(self, device, irp):
        seen.append(("C", irp.current_location, irp.current_stack_location.completion_routine == a.driver.ra))
        irp.mark_pending()
        if not self.queue.insert(irp):  # the device was idle: this IRP is started, not queued
            device.current_irp = irp
        return STATUS_PENDING


c = DeviceObject(C(), "C")
b = DeviceObject(B(), "B")
attach_device(b, c)
a = DeviceObject(A(), "A")
attach_device(a, b)
assert a.stack_size == 3

# 1. The I/O manager fills location 3 and calls A: CurrentLocation 4 -> 3.
irp = Irp(a.stack_size)
irp.next_stack_location.major = IrpMajor.READ
irp.next_stack_location.parameters = ReadWriteParameters(length=512)
coro = call(a, irp)
try:
    coro.send(None)
except StopIteration as stop:
    returned = stop.value
else:
    raise AssertionError("a dispatch routine suspended: nothing here may touch an event loop")

# 2-4. A got location 3, B location 2, C location 2 again (B skipped), still carrying RA;
# location 1 was never used; C pended, and B and A returned STATUS_PENDING unchanged.
assert seen == [("A", 3), ("B", 2), ("C", 2, True)], seen
assert returned == STATUS_PENDING, returned
assert irp._stack[0] is _UNUSED
assert not irp.completed and irp.current_location == 2

# Awaiting it needs the async shell, which is not there: a clear error, not a hang.
try:
    irp.__await__().send(None)
except RuntimeError as error:
    assert "async shell" in str(error), error
else:
    raise AssertionError("awaiting a pending IRP without the shell did not fail")

# 5-7. Later C completes it: RA runs with A's device and sees PendingReturned, marks location 3
# pending; the walk reaches StackCount + 2 with PendingReturned set.
assert c.current_irp is irp and c.driver.queue.busy
complete_request(irp, STATUS_SUCCESS, 512)
assert c.driver.queue.remove() is None and not c.driver.queue.busy  # nothing was waiting behind it
assert seen[3:] == [("RA", "A", True, 3)], seen
assert irp.completed and irp.current_location == 5 and irp.pending_returned

# A completed IRP is awaited without any event loop: __await__ returns at once.
try:
    irp.__await__().send(None)
except StopIteration as stop:
    assert stop.value == IoStatus(STATUS_SUCCESS, 512), stop.value
else:
    raise AssertionError("awaiting a completed IRP suspended")


# A pass-through driver's default dispatch needs the shell's pass_down: a clear error too.
class Filter(Driver):
    pass_through = True


f = DeviceObject(Filter(), "F")
attach_device(f, a)
other = Irp(f.stack_size)
other.next_stack_location.major = IrpMajor.WRITE
try:
    call(f, other).send(None)
except RuntimeError as error:
    assert "async shell" in str(error), error
else:
    raise AssertionError("a pass-through driver passed an IRP down without the shell")

loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
assert "airp._shell" not in sys.modules and not any(m.startswith("airp._shell.") for m in sys.modules)
print("ok", len(modules))
'''


def test_machine_imports_and_runs_reference_5_9_without_anyio() -> None:
    """The real airp._machine imports with anyio, trio, sniffio and asyncio blocked, and runs the
    worked example of reference 5.9 with no event loop (see the module docstring)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(PACKAGE_DIR)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok "), result.stdout
