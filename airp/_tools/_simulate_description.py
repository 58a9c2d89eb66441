"""The description file of ``airp simulate``: a stack of driver plugins and a workload, in TOML.

Reading a file checks all of it before anything runs: the TOML syntax (an error names the line and
column), every key (an unknown key or a value of the wrong type names its key path, e.g.
``workload.mix.read``, and says what was expected), the workload's values (a negative rate or a zero
concurrency is refused), and the drivers (an unknown plugin lists the installed ones; a parameter
the driver refuses names ``stack[N].params``).  The format is documented in ``docs/simulate.md``.

Values that would exhaust memory or overflow the run are refused too, each against a documented
limit (``docs/simulate.md``, "Bad input"): at most :data:`MAX_LAYERS` layers, transfer sizes and
``ioctl_output`` up to :data:`MAX_TRANSFER` bytes, a 32-bit ``ioctl``, at most
:data:`MAX_REQUESTERS` closed-arrival requesters and :data:`MAX_SAMPLES` depth samples, times up
to :data:`MAX_SECONDS`, and TOML nested no deeper than the parser can read.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._iomanager._plugins import load_driver
from .._machine._driver import Driver
from .._machine._irp import MAX_STACK_SIZE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "MAX_LAYERS",
    "MAX_REQUESTERS",
    "MAX_SAMPLES",
    "MAX_SECONDS",
    "MAX_TRANSFER",
    "SimulationDescriptionError",
    "Layer",
    "ReportOptions",
    "SimulationDescription",
    "Workload",
    "build_drivers",
    "load_simulation",
    "parse_simulation",
]

ARRIVALS = ("poisson", "fixed", "closed")
MAJORS = ("read", "write", "device_control")

#: The most layers a stack may have: an IRP has at most MAX_STACK_SIZE (127) locations, and the
#: root-enumerated PDO under the stack takes one of them.
MAX_LAYERS = MAX_STACK_SIZE - 1
#: The largest transfer (``size``) and ``ioctl_output``, in bytes: 16 MiB.  Each request holds its
#: buffer twice (the requester's and the system buffer), and a run holds many requests.
MAX_TRANSFER = 16 * 1024 * 1024
#: The largest control code: a 32-bit unsigned int, as ``DeviceIoControl`` takes it.
MAX_IOCTL = 0xFFFF_FFFF
#: The most requesters of closed arrivals: each is a task of its own.
MAX_REQUESTERS = 10_000
#: The most queue-depth samples of a report: each is kept in the report.
MAX_SAMPLES = 10_000
#: The longest service time (seconds) ``workload.service`` may give: virtual time is exact up to
#: 10**12 s, and a report's sums of far longer times overflow.
MAX_SECONDS = 1e12


class SimulationDescriptionError(ValueError):
    """A description file (or an option given with it) that cannot be run.

    :ivar source: the file's path (or ``"<string>"``, ``"command line"``).
    :ivar where: the line and column, or the key path (``workload.rate``).
    :ivar problem: what was wrong and what was expected.
    """

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(f"{source}: {where}: {problem}")


@dataclass(frozen=True)
class Layer:
    """One driver of the stack.

    :ivar driver: a plugin name (``airp drivers`` lists them) or a ``module:Class`` path.
    :ivar params: keyword arguments for the driver's class.
    :ivar function: whether it is the stack's function driver (the layers below it are lower
        filters, those above upper filters).
    :ivar key: where it is in the file (``stack[0]``), for error messages.
    """

    driver: str
    params: Mapping[str, Any]
    function: bool
    key: str


@dataclass(frozen=True)
class Workload:
    """What the requesters do.  See ``docs/simulate.md`` for every field.

    :ivar arrival: ``"poisson"`` or ``"fixed"`` (open arrivals at *rate* per second), or
        ``"closed"`` (*concurrency* requesters, each sending its next request when the last ends).
    :ivar rate: arrivals per second (open arrivals).
    :ivar concurrency: closed: the requesters; open: the most requests in flight (an arrival
        beyond it waits for one to end), or ``None`` for no limit.
    :ivar requests: how many requests to send, or ``None`` (then *duration*).
    :ivar duration: seconds during which requests are sent, or ``None`` (then *requests*).
    :ivar warmup: the first requests sent, left out of the statistics.
    :ivar mix: weight of each major function (``read``, ``write``, ``device_control``).
    :ivar sizes: transfer sizes in bytes, one drawn uniformly per request.
    :ivar blocks: offsets are drawn uniformly from ``range(blocks)``, times *block_size*.
    :ivar block_size: bytes per block of offset.
    :ivar ioctl: the control code of device-control requests.
    :ivar ioctl_output: their output buffer length.
    :ivar service: the function driver's ``service`` parameter (its service time), or ``None``.
    :ivar seed: seeds the arrivals, the mix, sizes and offsets, and the drivers' draws.
    """

    arrival: str = "poisson"
    rate: float | None = None
    concurrency: int | None = None
    requests: int | None = None
    duration: float | None = None
    warmup: int = 0
    mix: Mapping[str, float] = field(default_factory=lambda: {"read": 1.0})
    sizes: tuple[int, ...] = (512,)
    blocks: int = 1
    block_size: int = 4096
    ioctl: int | None = None
    ioctl_output: int = 8
    service: float | Mapping[str, Any] | None = None
    seed: int = 0


@dataclass(frozen=True)
class ReportOptions:
    """How the report is computed.

    :ivar batches: batches for the batch-means confidence intervals (at least 2).
    :ivar samples: about how many times the queue depths are sampled over the run.
    """

    batches: int = 20
    samples: int = 100


@dataclass(frozen=True)
class SimulationDescription:
    """A checked description: the stack, bottom to top, and the workload.

    :ivar source: the file it came from.
    :ivar name: a title for the report.
    :ivar device: the name of the stack's PDO, which the requesters open.
    :ivar hardware_id: the hardware id the stack is added with.
    :ivar stack: the layers, bottom to top.
    :ivar workload: the workload.
    :ivar report: the report's options.
    """

    source: str
    name: str
    device: str
    hardware_id: str
    stack: tuple[Layer, ...]
    workload: Workload
    report: ReportOptions

    @property
    def function_index(self) -> int:
        """The position of the function driver in :attr:`stack`."""
        return next(i for i, layer in enumerate(self.stack) if layer.function)

    def with_options(
        self, *, requests: int | None = None, duration: float | None = None, seed: int | None = None
    ) -> SimulationDescription:
        """The description with command-line options applied: they win over the file.

        Giving *requests* drops the file's duration and the other way round.  If *requests*
        would leave less than half of the run after the file's warm-up, the warm-up becomes a
        tenth of *requests*, so that a short trial run of a long description still measures.

        :raises SimulationDescriptionError: if both are given, or the result is not a valid workload.
        :raises TypeError: if *requests* or *seed* is not an int, or *duration* not a number.
        """
        for name, value, kinds in (("requests", requests, (int,)), ("duration", duration, (int, float)), ("seed", seed, (int,))):
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                expected = "an int" if kinds == (int,) else "a number of seconds"
                raise TypeError(f"with_options: {name} must be {expected} or None, got {type(value).__name__} {value!r}")
        if requests is not None and duration is not None:
            raise SimulationDescriptionError("command line", "--requests/--duration", "give one of them, not both")
        workload = self.workload
        if requests is not None:
            warmup = workload.warmup if workload.warmup < requests / 2 else requests // 10
            workload = replace(workload, requests=requests, duration=None, warmup=warmup)
        if duration is not None:
            workload = replace(workload, duration=duration, requests=None)
        if seed is not None:
            workload = replace(workload, seed=seed)
        _check_workload(workload, "command line" if workload is not self.workload else self.source)
        return replace(self, workload=workload)


# -- reading -----------------------------------------------------------------------------------------


def load_simulation(path: str | Path) -> SimulationDescription:
    """Read and check a description file.

    :param path: the TOML file.
    :returns: the checked description.
    :raises SimulationDescriptionError: naming the file and the line or key, for anything that cannot run
        (a file that cannot be read included).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SimulationDescriptionError(source, "file", f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise SimulationDescriptionError(source, "file", f"is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return parse_simulation(text, source)


def parse_simulation(text: str, source: str = "<string>") -> SimulationDescription:
    """Parse and check the text of a description.

    :param text: TOML.
    :param source: the name errors give for it.
    :returns: the checked description.
    :raises SimulationDescriptionError: for malformed TOML (with its line and column), unknown keys, values
        of the wrong type or out of range (with their key path), an unknown driver plugin (with
        the installed ones).
    :raises TypeError: if *text* or *source* is not a str.
    """
    for name, value in (("text", text), ("source", source)):
        if not isinstance(value, str):
            raise TypeError(f"parse_simulation: {name} must be a str, got {type(value).__name__} {value!r}")
    try:
        document = tomllib.loads(text)
    except RecursionError:
        # tomllib reads arrays and inline tables recursively: a file nested deeper than the
        # interpreter's recursion limit is refused as malformed, not with a traceback.
        raise SimulationDescriptionError(
            source, "TOML", "malformed: arrays or inline tables nested too deeply for the TOML reader (a few hundred levels)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        where, _, rest = message.rpartition("(at ")
        if rest.endswith(")") and where:
            raise SimulationDescriptionError(source, rest[:-1], f"malformed TOML: {where.strip()}") from None
        raise SimulationDescriptionError(source, "TOML", f"malformed: {message}") from None
    reader = _Reader(source)
    reader.keys(document, "", {"simulation", "stack", "workload", "report"})
    simulation = reader.table(document, "simulation", "simulation", required=False)
    reader.keys(simulation, "simulation", {"name", "device", "hardware_id"})
    name = reader.string(simulation, "name", "simulation.name", default=Path(source).stem)
    device = reader.string(simulation, "device", "simulation.device", default="\\Device\\Sim0")
    if not device.startswith("\\"):
        raise SimulationDescriptionError(source, "simulation.device", f"expected a device name such as '\\Device\\Sim0', got {device!r}")
    hardware_id = reader.string(simulation, "hardware_id", "simulation.hardware_id", default="airp-simulate")

    layers_raw = document.get("stack")
    if layers_raw is None:
        raise SimulationDescriptionError(source, "stack", "missing: expected [[stack]] tables naming the drivers, bottom to top")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise SimulationDescriptionError(source, "stack", "expected one or more [[stack]] tables (bottom to top)")
    if len(layers_raw) > MAX_LAYERS:
        raise SimulationDescriptionError(
            source,
            "stack",
            f"{len(layers_raw)} layers; at most {MAX_LAYERS} (an IRP has at most {MAX_STACK_SIZE} stack locations,"
            " one of them the PDO's)",
        )
    layers = []
    for index, raw in enumerate(layers_raw):
        key = f"stack[{index}]"
        if not isinstance(raw, dict):
            raise SimulationDescriptionError(source, key, f"expected a table with driver = ..., got {raw!r}")
        reader.keys(raw, key, {"driver", "params", "function"})
        driver = reader.string(raw, "driver", f"{key}.driver")
        params = reader.table(raw, "params", f"{key}.params", required=False)
        function = reader.boolean(raw, "function", f"{key}.function", default=False)
        layers.append(Layer(driver, dict(params), function, key))
    marked = [layer for layer in layers if layer.function]
    if len(marked) > 1:
        raise SimulationDescriptionError(
            source, marked[1].key + ".function", f"only one function driver per stack ({marked[0].key} is already one)"
        )
    if not marked:
        layers[0] = replace(layers[0], function=True)

    workload = _read_workload(reader, reader.table(document, "workload", "workload", required=False))
    report_table = reader.table(document, "report", "report", required=False)
    reader.keys(report_table, "report", {"batches", "samples"})
    report = ReportOptions(
        batches=reader.integer(report_table, "batches", "report.batches", default=20, low=2),
        samples=reader.integer(report_table, "samples", "report.samples", default=100, low=1, high=MAX_SAMPLES),
    )
    description = SimulationDescription(source, name, device, hardware_id, tuple(layers), workload, report)
    _check_workload(workload, source, complete=False)
    return description


def _read_workload(reader: _Reader, table: Mapping[str, Any]) -> Workload:
    reader.keys(
        table,
        "workload",
        {
            "arrival", "rate", "concurrency", "requests", "duration", "warmup", "mix", "size", "offsets",
            "ioctl", "ioctl_output", "service", "seed",
        },
    )
    arrival = reader.string(table, "arrival", "workload.arrival", default="poisson")
    if arrival not in ARRIVALS:
        raise SimulationDescriptionError(reader.source, "workload.arrival", f"expected one of {', '.join(ARRIVALS)}, got {arrival!r}")
    mix_table = reader.table(table, "mix", "workload.mix", required=False)
    reader.keys(mix_table, "workload.mix", set(MAJORS))
    mix = {key: reader.number(mix_table, key, f"workload.mix.{key}", low=0.0) for key in MAJORS if key in mix_table}
    sizes: tuple[int, ...] = (512,)
    if "size" in table:
        raw = table["size"]
        values = raw if isinstance(raw, list) else [raw]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise SimulationDescriptionError(
                reader.source, "workload.size", f"expected bytes (an integer >= 0) or a non-empty list of them, got {raw!r}"
            )
        if max(values) > MAX_TRANSFER:
            raise SimulationDescriptionError(
                reader.source, "workload.size", f"expected at most {MAX_TRANSFER} bytes (16 MiB) per request, got {max(values)}"
            )
        sizes = tuple(values)
    offsets = reader.table(table, "offsets", "workload.offsets", required=False)
    reader.keys(offsets, "workload.offsets", {"blocks", "block_size"})
    service = table.get("service")
    if service is not None and (isinstance(service, bool) or not isinstance(service, (int, float, dict))):
        raise SimulationDescriptionError(
            reader.source, "workload.service", f"expected seconds or a table such as {{ distribution = \"exponential\", mean = 1.0 }}, got {service!r}"
        )
    _check_service_scale(reader, service)
    return Workload(
        arrival=arrival,
        rate=reader.number(table, "rate", "workload.rate", default=None),
        concurrency=reader.integer(table, "concurrency", "workload.concurrency", default=None),
        requests=reader.integer(table, "requests", "workload.requests", default=None),
        duration=reader.number(table, "duration", "workload.duration", default=None),
        warmup=reader.integer(table, "warmup", "workload.warmup", default=0, low=0),
        mix=mix or {"read": 1.0},
        sizes=sizes,
        blocks=reader.integer(offsets, "blocks", "workload.offsets.blocks", default=1, low=1),
        block_size=reader.integer(offsets, "block_size", "workload.offsets.block_size", default=4096, low=1),
        ioctl=reader.integer(table, "ioctl", "workload.ioctl", default=None, low=0, high=MAX_IOCTL, what="a 32-bit control code"),
        ioctl_output=reader.integer(table, "ioctl_output", "workload.ioctl_output", default=8, low=0, high=MAX_TRANSFER),
        service=service,
        seed=reader.integer(table, "seed", "workload.seed", default=0),
    )


def _check_service_scale(reader: _Reader, service: object) -> None:
    """Refuse service times beyond :data:`MAX_SECONDS`; their shape is the driver's to check."""
    if isinstance(service, (int, float)) and not isinstance(service, bool):
        if not service <= MAX_SECONDS:  # also NaN
            raise reader.fail("workload.service", f"expected at most {MAX_SECONDS:g} seconds, got {service!r}")
    elif isinstance(service, dict):
        mean, rate = service.get("mean"), service.get("rate")
        if isinstance(mean, (int, float)) and not isinstance(mean, bool) and not mean <= MAX_SECONDS:
            raise reader.fail("workload.service.mean", f"expected at most {MAX_SECONDS:g} seconds, got {mean!r}")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0 and not rate >= 1 / MAX_SECONDS:
            raise reader.fail("workload.service.rate", f"expected at least {1 / MAX_SECONDS:g} per second (a mean of at most {MAX_SECONDS:g} s), got {rate!r}")


def _check_workload(workload: Workload, source: str, *, complete: bool = True) -> None:
    """Refuse impossible values; with *complete*, also a workload that says nothing of its length."""

    def refuse(key: str, problem: str) -> SimulationDescriptionError:
        return SimulationDescriptionError(source, f"workload.{key}", problem)

    if workload.arrival == "closed":
        if workload.concurrency is None:
            raise refuse("concurrency", "closed arrivals need concurrency = N requesters (N >= 1)")
        if workload.rate is not None:
            raise refuse("rate", "closed arrivals take no rate: each requester sends its next request when the last ends")
    elif workload.rate is None:
        raise refuse("rate", f"{workload.arrival} arrivals need rate = arrivals per second (> 0)")
    elif not (workload.rate > 0 and math.isfinite(workload.rate)):
        raise refuse("rate", f"expected arrivals per second > 0, got {workload.rate!r}")
    if workload.concurrency is not None and workload.concurrency < 1:
        raise refuse("concurrency", f"expected at least 1 request in flight, got {workload.concurrency!r}")
    if workload.arrival == "closed" and workload.concurrency is not None and workload.concurrency > MAX_REQUESTERS:
        raise refuse(
            "concurrency", f"expected at most {MAX_REQUESTERS} requesters (each is a task), got {workload.concurrency!r}"
        )
    if workload.requests is not None and workload.requests < 1:
        raise refuse("requests", f"expected at least 1 request, got {workload.requests!r}")
    if workload.duration is not None and not (workload.duration > 0 and math.isfinite(workload.duration)):
        raise refuse("duration", f"expected seconds > 0, got {workload.duration!r}")
    if workload.requests is not None and workload.duration is not None:
        raise refuse("requests", "give requests or duration, not both")
    if complete and workload.requests is None and workload.duration is None:
        raise refuse("requests", "say how long to run: requests = N or duration = seconds (or --requests / --duration)")
    if workload.requests is not None and workload.warmup >= workload.requests:
        raise refuse("warmup", f"the warm-up ({workload.warmup} requests) leaves none of the {workload.requests} to measure")
    if not sum(workload.mix.values()) > 0:
        raise refuse("mix", "at least one weight must be > 0 (read, write, device_control)")
    if not math.isfinite(sum(workload.mix.values())):
        raise refuse("mix", f"the weights must add up to a finite number, got {dict(workload.mix)!r}")
    if workload.mix.get("device_control", 0) > 0 and workload.ioctl is None:
        raise refuse("ioctl", "device_control requests need ioctl = the control code to send")


# -- the drivers ---------------------------------------------------------------------------------------


def _driver_class(layer: Layer, source: str) -> Any:
    spec = layer.driver
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise SimulationDescriptionError(source, f"{layer.key}.driver", f"cannot import module {module_name!r} ({error})") from None
        try:
            return getattr(module, attribute)
        except AttributeError:
            raise SimulationDescriptionError(source, f"{layer.key}.driver", f"module {module_name!r} has no {attribute!r}") from None
    try:
        return load_driver(spec)
    except LookupError as error:
        raise SimulationDescriptionError(source, f"{layer.key}.driver", f"{error}; or give a module:Class path") from None


def build_drivers(description: SimulationDescription) -> list[Driver]:
    """Make the stack's driver objects, bottom to top, with their parameters.

    The workload's ``service`` goes to the function driver's ``service`` parameter.  A driver
    whose class takes ``seed`` and is not given one gets ``workload.seed + 1 + its position``.

    :returns: the driver objects, one per layer.
    :raises SimulationDescriptionError: for an unknown plugin (listing the installed ones), a module path
        that does not import, something that is not a driver class, or parameters the driver
        refuses (``stack[N].params``).
    """
    source = description.source
    drivers = []
    for index, layer in enumerate(description.stack):
        cls = _driver_class(layer, source)
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            raise SimulationDescriptionError(source, f"{layer.key}.driver", f"{layer.driver!r} is {cls!r}, expected an airp.Driver subclass")
        params = dict(layer.params)
        accepted: Mapping[str, inspect.Parameter]
        try:
            accepted = inspect.signature(cls).parameters
        except (TypeError, ValueError):  # pragma: no cover - a class without a readable signature
            accepted = {}
        if layer.function and description.workload.service is not None:
            if "service" not in accepted:
                raise SimulationDescriptionError(
                    source, "workload.service", f"the function driver {layer.driver!r} takes no service parameter"
                )
            params["service"] = description.workload.service
        if "seed" in accepted and "seed" not in params:
            params["seed"] = description.workload.seed + 1 + index
        try:
            driver = cls(**params)
        except (TypeError, ValueError) as error:
            raise SimulationDescriptionError(source, f"{layer.key}.params", f"{layer.driver} refused them: {error}") from None
        # The stack is built by Plug and Play, which calls each driver's AddDevice: the same test
        # as the PnP manager's, made here so that it is a description error, not a traceback.
        if not callable(getattr(driver, "add_device", None)):
            raise SimulationDescriptionError(
                source,
                f"{layer.key}.driver",
                f"{layer.driver!r} has no add_device(pdo) routine (AddDevice), so it cannot be a layer of a Plug and Play stack",
            )
        drivers.append(driver)
    return drivers


class _Reader:
    """Typed look-ups in a parsed TOML table, each failure naming the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> SimulationDescriptionError:
        return SimulationDescriptionError(self.source, key, problem)

    def keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                path = f"{where}.{key}" if where else key
                raise self.fail(path, f"unknown key; expected one of {', '.join(sorted(allowed))}")

    def table(self, parent: Mapping[str, Any], key: str, path: str, *, required: bool) -> Mapping[str, Any]:
        if key not in parent:
            if required:  # pragma: no cover - no required table is read this way yet
                raise self.fail(path, "missing table")
            return {}
        value = parent[key]
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a table, got {value!r}")
        return value

    def string(self, table: Mapping[str, Any], key: str, path: str, *, default: str | None = None) -> str:
        if key not in table:
            if default is None:
                raise self.fail(path, "missing: expected a string")
            return default
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def integer(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: Any,
        low: int | None = None,
        high: int | None = None,
        what: str = "an integer",
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected {what}, got {value!r}")
        if low is not None and value < low:
            raise self.fail(path, f"expected an integer >= {low}, got {value!r}")
        if high is not None and value > high:
            limit = f"{high:#x}" if high == MAX_IOCTL else str(high)
            raise self.fail(path, f"expected {what} <= {limit}, got {value!r}")
        return value

    def number(self, table: Mapping[str, Any], key: str, path: str, *, default: Any = None, low: float | None = None) -> Any:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"expected a number, got {value!r}")
        if low is not None and not value >= low:
            raise self.fail(path, f"expected a number >= {low:g}, got {value!r}")
        return float(value)
