"""``airp simulate`` (issue 13): the examples against queueing theory, the workload options, the
report, bad input, and the command line (in-process through ``main`` and once as a subprocess).

Every simulation runs in its own event loop (``airp.simulate`` calls ``anyio.run``), on the
virtual clock unless a test asks for real time; each is run on both backends where the backend
could matter, and a run must give the same report on both.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp._tools._cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BACKENDS = ("asyncio", "trio")
HERE = Path(__file__).resolve().parent


def run(text: str, backend: str = "asyncio", **options: Any) -> airp.SimulationReport:
    return airp.simulate(airp.parse_simulation(text, "test.toml"), backend=backend, **options)


def within_interval(summary: dict[str, Any], expected: float) -> bool:
    return bool(abs(summary["mean"] - expected) <= summary["ci95"])


DISK = """
[[stack]]
driver = "sim-disk"
params = {{ service = {service} }}

[workload]
{workload}
"""


# -- the examples against theory -------------------------------------------------------------------


def test_mm1_disk_mean_time_in_system_is_5_within_the_runs_interval() -> None:
    """One StartIo lane, Poisson arrivals at 0.8, exponential service at 1.0: 1 / (mu - lambda) = 5."""
    report = airp.simulate(airp.load_simulation(EXAMPLES / "mm1_disk.toml"))
    read = report.latency["read"]
    assert (report.sent, report.completed, report.lost) == (20000, 20000, 0)
    assert read["count"] == 19000  # the warm-up's 1000 are left out
    # An honest interval of a run this long is a few tenths wide; 5.0 must fall inside it.
    assert 0.05 < read["ci95"] < 0.6
    assert within_interval(read, 5.0), read
    # The wait in the lane is the time in system less one mean service time: 4.0.
    assert within_interval(report.queues["1 sim-disk / io"]["wait"], 4.0)
    assert report.throughput == pytest.approx(0.8, rel=0.03)
    assert report.statuses == {"STATUS_SUCCESS": 20000}


def test_disk_cache_hit_ratio_and_disk_queue_match_theory() -> None:
    """Uniform references over 1024 blocks, 256 cached: hit ratio 0.25, the disk an M/M/1 at 0.65."""
    report = airp.simulate(airp.load_simulation(EXAMPLES / "disk_cache.toml"), backend="trio")
    assert report.lost == 0
    assert report.statuses == {"STATUS_SUCCESS": 20000}
    cache = report.drivers["2 cache-filter"]
    # The hit ratio counts the warm-up too (the first ~300 reads find the cache filling), which
    # keeps it a little under 0.25; its binomial standard deviation is 0.0035 here.
    assert 0.23 < cache["hit_ratio"] <= 0.26
    assert cache["evictions"] > 0
    disk_time = 1 / (1 - 0.8 * (0.25 + 0.75 * 0.75))
    assert within_interval(report.layers["1 sim-disk"], disk_time)
    assert within_interval(report.latency["read"], 0.75 * disk_time)
    assert within_interval(report.latency["write"], disk_time)
    # Hits never reach the disk: the disk layer saw fewer requests than the cache's.
    assert report.layers["1 sim-disk"]["count"] < report.layers["2 cache-filter"]["count"]
    assert report.latency["read"]["p50"] < report.latency["write"]["p50"]


def test_rw_lanes_each_lane_is_an_md1_queue() -> None:
    """Two lanes, 0.8 per second each, fixed 1 s: mean time in system 3.0 in each (P-K)."""
    report = airp.simulate(airp.load_simulation(EXAMPLES / "rw_lanes.toml"))
    assert report.lost == 0
    for major in ("read", "write"):
        assert within_interval(report.latency[major], 3.0), (major, report.latency[major])
        # Fixed service: the fastest request is exactly one service time.
    assert set(report.queues) == {"1 rw-lanes-disk / read", "1 rw-lanes-disk / write"}
    assert report.throughput == pytest.approx(1.6, rel=0.03)
    assert report.drivers["1 rw-lanes-disk"]["served read"] + report.drivers["1 rw-lanes-disk"]["served write"] == 20000


@pytest.mark.parametrize("example", ["mm1_disk", "disk_cache", "rw_lanes"])
def test_an_example_gives_the_same_report_on_both_backends(example: str) -> None:
    description = airp.load_simulation(EXAMPLES / f"{example}.toml").with_options(requests=1500)
    reports = [airp.simulate(description, backend=backend).as_dict() for backend in BACKENDS]
    for report in reports:
        del report["backend"], report["wall_seconds"]
        assert report["lost"] == 0
        assert report["completed"] == 1500
    assert reports[0] == reports[1]


# -- workload options ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_arrivals_keep_concurrency_requests_in_flight(backend: str) -> None:
    """Three requesters on a one-lane disk taking 1 s: each request waits for the two ahead of it."""
    report = run(
        DISK.format(service=1.0, workload='arrival = "closed"\nconcurrency = 3\nrequests = 300\nwarmup = 3'), backend
    )
    read = report.latency["read"]
    assert read["p50"] == read["max"] == 3.0
    assert read["mean"] == pytest.approx(3.0)
    assert report.elapsed == pytest.approx(300.0)
    assert report.queues["1 sim-disk / io"]["depth_max"] == 3
    # Sampled as a request completes (its requester has not sent the next one yet): 2 while the
    # requesters still send, then fewer as the last requests drain.
    in_flight = [sample["in_flight"] for sample in report.depth_series]
    assert set(in_flight[: len(in_flight) - 2]) == {2}
    assert in_flight[-1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_concurrency_limit_on_open_arrivals_holds_arrivals_back(backend: str) -> None:
    """Ten arrivals a second, at most one in flight, 1 s each: no request ever waits in the lane."""
    report = run(DISK.format(service=1.0, workload="arrival = \"fixed\"\nrate = 10\nconcurrency = 1\nrequests = 50"), backend)
    assert report.latency["read"]["max"] == pytest.approx(1.0)
    assert report.queues["1 sim-disk / io"]["wait"]["max"] == 0.0
    assert report.throughput == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_duration_sends_arrivals_until_it_is_over(backend: str) -> None:
    """Fixed arrivals at 1 per second for 100 s: arrivals at 1, 2, ... 99 s; the series is sampled by time."""
    report = run(DISK.format(service=0.5, workload='arrival = "fixed"\nrate = 1.0\nduration = 100.0'), backend)
    assert report.sent == report.completed == 99
    times = [sample["time"] for sample in report.depth_series]
    assert times == sorted(times)
    assert len(times) >= 99
    assert times[-1] <= 100.0
    assert all(sample["in_flight"] <= 1 for sample in report.depth_series)
    assert report.latency["read"]["max"] == 0.5


def test_the_mix_sizes_and_device_controls() -> None:
    """Weights choose the major functions; device controls pass the cache down and are answered at once."""
    text = """
[[stack]]
driver = "sim-disk"
params = { service = 0.01 }
[[stack]]
driver = "cache-filter"
params = { capacity = 4 }
[workload]
rate = 1.0
requests = 2000
mix = { read = 2, write = 1, device_control = 1 }
size = [512, 4096]
offsets = { blocks = 8 }
ioctl = 0x80032004
"""
    report = run(text)
    counts = {major: report.latency[major]["count"] for major in ("read", "write", "device_control")}
    assert sum(counts.values()) == 2000
    assert counts["read"] == pytest.approx(1000, rel=0.1)
    assert counts["write"] == pytest.approx(500, rel=0.15)
    assert counts["device_control"] == pytest.approx(500, rel=0.15)
    assert report.latency["device_control"]["max"] == 0.0  # the disk answers it in its dispatch routine
    assert report.statuses == {"STATUS_SUCCESS": 2000}


def test_a_short_run_of_a_long_description_keeps_a_tenth_as_warm_up() -> None:
    description = airp.load_simulation(EXAMPLES / "mm1_disk.toml")
    assert description.workload.warmup == 1000
    assert description.with_options(requests=3000).workload.warmup == 1000
    assert description.with_options(requests=500).workload.warmup == 50


def test_the_seed_makes_the_run() -> None:
    description = airp.load_simulation(EXAMPLES / "mm1_disk.toml").with_options(requests=500)
    first, again = (airp.simulate(description).latency for _ in range(2))
    other = airp.simulate(description.with_options(seed=2)).latency
    assert first == again
    assert first != other


def test_a_layer_that_holds_the_irp_after_it_came_back_is_timed_until_it_completes() -> None:
    """forward_and_wait stops the completion walk at the filter (MORE_PROCESSING_REQUIRED): the disk's
    time ends there, the filter's when it completes the IRP ``hold`` seconds later."""
    text = """
[[stack]]
driver = "sim-disk"
params = { service = 1.0 }
[[stack]]
driver = "_simulate_drivers:ThenWaitFilter"
params = { hold = 0.25 }
[workload]
arrival = "closed"
concurrency = 1
requests = 20
"""
    report = run(text)
    assert report.layers["1 sim-disk"]["max"] == report.layers["1 sim-disk"]["p50"] == 1.0
    assert report.layers["2 then-wait-filter"]["max"] == report.layers["2 then-wait-filter"]["p50"] == 1.25
    assert report.latency["read"]["mean"] == pytest.approx(1.25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_time_runs_on_the_wall_clock(backend: str) -> None:
    report = run(DISK.format(service=0.001, workload='arrival = "closed"\nconcurrency = 2\nrequests = 20'), backend, real_time=True)
    assert report.clock == "real"
    assert report.completed == 20
    assert report.lost == 0


def test_progress_lines_without_rich(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    run(DISK.format(service=0.5, workload="rate = 1.0\nrequests = 200"), progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("airp simulate:")]
    assert len(lines) >= 9
    assert lines[-1] == "airp simulate: 200 of 200 requests"


def test_progress_bar_with_rich(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich", reason="rich is in the dev extra")  # CI installs .[dev]: never skipped there
    report = run(DISK.format(service=0.5, workload="rate = 1.0\nduration = 50.0"), progress=True)
    assert report.completed == report.sent > 40
    assert "airp simulate:" not in capsys.readouterr().err  # the bar, not the plain lines


@st.composite
def workloads(draw: st.DrawFn) -> str:
    """A random but valid description: a disk, maybe lanes, maybe a cache, any arrivals and mix."""
    disk = draw(st.sampled_from(["sim-disk", "rw-lanes-disk"]))
    service = draw(st.sampled_from(["0.5", '{ distribution = "exponential", mean = 0.5 }', "0"]))
    text = f'[[stack]]\ndriver = "{disk}"\nparams = {{ service = {service} }}\n'
    if draw(st.booleans()):
        text += f'[[stack]]\ndriver = "cache-filter"\nparams = {{ capacity = {draw(st.integers(0, 4))} }}\n'
    arrival = draw(st.sampled_from(["poisson", "fixed", "closed"]))
    text += f'[workload]\narrival = "{arrival}"\nrequests = {draw(st.integers(1, 40))}\n'
    if arrival == "closed":
        text += f"concurrency = {draw(st.integers(1, 5))}\n"
    else:
        text += f"rate = {draw(st.sampled_from([0.5, 1.0, 4.0]))}\n"
        if draw(st.booleans()):
            text += f"concurrency = {draw(st.integers(1, 3))}\n"
    weights = draw(st.lists(st.integers(0, 3), min_size=3, max_size=3).filter(lambda w: sum(w) > 0))
    text += "mix = {{ read = {}, write = {}, device_control = {} }}\nioctl = 0x80032004\n".format(*weights)
    text += f"offsets = {{ blocks = {draw(st.integers(1, 8))} }}\nseed = {draw(st.integers(0, 1000))}\n"
    return text


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=workloads(), backend=st.sampled_from(BACKENDS))
def test_any_workload_is_accounted_for(text: str, backend: str) -> None:
    """Whatever the stack and workload: every request sent completes, once, and is counted once."""
    report = run(text, backend)
    workload = airp.parse_simulation(text).workload
    assert report.sent == report.completed == workload.requests
    assert report.lost == 0
    assert report.ended == "completed"
    assert sum(report.statuses.values()) == report.sent
    assert report.latency["all"]["count"] == sum(v["count"] for k, v in report.latency.items() if k != "all")
    assert report.latency["all"]["count"] == report.sent - workload.warmup
    for summary in (*report.latency.values(), *report.layers.values()):
        if summary["count"]:
            assert 0 <= summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    # Every queue is empty at the end.
    assert all(depth == 0 for depth in report.depth_series[-1]["queues"].values())


# -- lost requests -----------------------------------------------------------------------------------


HOLDING = """
[[stack]]
driver = "_simulate_drivers:HoldingDisk"
[workload]
arrival = "fixed"
rate = 1.0
requests = 5
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_never_completed_are_lost_and_the_command_exits_1(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "holding.toml"
    path.write_text(HOLDING)
    assert main(["simulate", str(path), "--backend", backend, "--no-progress", "--json", str(tmp_path / "r.json")]) == 1
    captured = capsys.readouterr()
    assert "lost 5" in captured.out
    assert "5 requests lost (deadlock:" in captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["lost"] == 5
    assert report["ended"].startswith("deadlock:")


# -- the report --------------------------------------------------------------------------------------


def test_the_json_report_holds_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["simulate", str(EXAMPLES / "disk_cache.toml"), "--requests", "800", "--seed", "3", "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["seed"] == 3
    assert report["sent"] == 800
    assert report["lost"] == 0
    assert set(report["latency"]) == {"read", "write", "all"}
    for summary in (*report["latency"].values(), *report["layers"].values()):
        assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
    assert list(report["layers"]) == ["1 sim-disk", "2 cache-filter"]
    assert set(report["queues"]["1 sim-disk / io"]) == {"wait", "depth_max", "depth_mean"}
    assert len(report["depth_series"]) == 101  # every 8th completion, and once at the end
    assert set(report["depth_series"][0]) == {"time", "in_flight", "queues"}
    printed = capsys.readouterr().out
    assert "latency (s) by function" in printed
    assert "2 cache-filter: hits" in printed


def test_the_trace_of_a_run_is_a_chrome_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airp._tools._trace_export import read_chrome_trace

    out = tmp_path / "trace.json"
    assert main(["simulate", str(EXAMPLES / "disk_cache.toml"), "--requests", "40", "--no-progress", "--trace", str(out)]) == 0
    events = read_chrome_trace(out)["traceEvents"]
    tracks = {event["args"]["name"] for event in events if event.get("name") == "process_name"}
    assert {"sim-disk", "cache-filter"} <= tracks
    assert any(event.get("ph") == "X" for event in events)
    assert "lost 0" in capsys.readouterr().out


def test_latency_summary_percentiles_and_interval() -> None:
    from airp._tools._simulate import latency_summary, t95

    summary = latency_summary([float(n) for n in range(1, 101)], batches=4)
    assert (summary["p50"], summary["p90"], summary["p99"], summary["max"]) == (50.0, 90.0, 99.0, 100.0)
    means = [13.0, 38.0, 63.0, 88.0]
    spread = math.sqrt(sum((m - 50.5) ** 2 for m in means) / 3)
    assert summary["ci95"] == pytest.approx(t95(3) * spread / 2)
    assert latency_summary([], 4) == {"count": 0}
    assert latency_summary([1.0], 4)["ci95"] is None


# -- bad input -----------------------------------------------------------------------------------------


def error_of(text: str) -> str:
    with pytest.raises(airp.SimulationDescriptionError) as caught:
        airp.parse_simulation(text, "bad.toml")
    return str(caught.value)


GOOD_STACK = '[[stack]]\ndriver = "sim-disk"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[stack]]\ndriver = "sim-disk"\nparams = {\n', "bad.toml: line 3, column"),
        ('[[stack]]\ndriver = "sim-disk"\n[workload]\nrate = = 1\n', "bad.toml: line 4, column 8: malformed TOML"),
        ("[workload]\nrate = 1.0\nrequests = 5\n", "bad.toml: stack: missing"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nrequests = 5\nburst = 3\n", "bad.toml: workload.burst: unknown key; expected one of"),
        (GOOD_STACK + "[workloads]\n", "bad.toml: workloads: unknown key"),
        (GOOD_STACK + "[workload]\nrate = \"fast\"\n", "bad.toml: workload.rate: expected a number, got 'fast'"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nmix = { read = 1, erase = 2 }\n", "workload.mix.erase: unknown key"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nmix = { read = -1 }\n", "workload.mix.read: expected a number >= 0"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nmix = { read = 0 }\n", "workload.mix: at least one weight must be > 0"),
        (GOOD_STACK + "[workload]\nrate = -0.8\n", "workload.rate: expected arrivals per second > 0, got -0.8"),
        (GOOD_STACK + "[workload]\nrate = 0\n", "workload.rate: expected arrivals per second > 0"),
        (GOOD_STACK + "[workload]\nrate = inf\n", "workload.rate: expected arrivals per second > 0"),
        (GOOD_STACK + "[workload]\narrival = \"closed\"\nconcurrency = 0\n", "workload.concurrency: expected at least 1"),
        (GOOD_STACK + "[workload]\narrival = \"closed\"\n", "workload.concurrency: closed arrivals need concurrency"),
        (GOOD_STACK + "[workload]\narrival = \"closed\"\nconcurrency = 2\nrate = 1.0\n", "workload.rate: closed arrivals take no rate"),
        (GOOD_STACK + "[workload]\narrival = \"bursty\"\n", "workload.arrival: expected one of poisson, fixed, closed"),
        (GOOD_STACK + "[workload]\n", "workload.rate: poisson arrivals need rate"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nrequests = 0\n", "workload.requests: expected at least 1 request"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nduration = -5.0\n", "workload.duration: expected seconds > 0"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nrequests = 5\nduration = 5.0\n", "give requests or duration, not both"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nrequests = 5\nwarmup = 5\n", "workload.warmup: the warm-up (5 requests) leaves none"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nsize = -1\n", "workload.size: expected bytes"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nsize = []\n", "workload.size: expected bytes"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nmix = { device_control = 1 }\n", "workload.ioctl: device_control requests need ioctl"),
        (GOOD_STACK + "[workload]\nrate = 1.0\nservice = \"slow\"\n", "workload.service: expected seconds or a table"),
        (GOOD_STACK + "[workload]\nrate = 1.0\noffsets = { blocks = 0 }\n", "workload.offsets.blocks: expected an integer >= 1"),
        ('[[stack]]\ndriver = 5\n', "stack[0].driver: expected a non-empty string, got 5"),
        ('[[stack]]\nplugin = "sim-disk"\n', "stack[0].plugin: unknown key"),
        ('stack = 3\n', "stack: expected one or more [[stack]] tables"),
        (GOOD_STACK + 'function = true\n[[stack]]\ndriver = "cache-filter"\nfunction = true\n', "stack[1].function: only one function driver"),
        ('[simulation]\ndevice = "Disk0"\n' + GOOD_STACK, "simulation.device: expected a device name"),
        (GOOD_STACK + "[report]\nbatches = 1\n", "report.batches: expected an integer >= 2"),
    ],
)
def test_a_malformed_description_names_the_line_or_key_and_what_was_expected(text: str, expected: str) -> None:
    assert expected in error_of(text)


def driver_error_of(text: str) -> str:
    description = airp.parse_simulation(text + "[workload]\nrate = 1.0\nrequests = 5\n", "bad.toml")
    with pytest.raises(airp.SimulationDescriptionError) as caught:
        airp.simulate(description)
    return str(caught.value)


def test_an_unknown_plugin_lists_the_available_ones() -> None:
    message = driver_error_of('[[stack]]\ndriver = "sim-dsik"\n')
    assert message.startswith("bad.toml: stack[0].driver: no airp driver plugin named 'sim-dsik' (available: ")
    for name in ("cache-filter", "rw-lanes-disk", "sim-disk", "toaster"):
        assert name in message


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ('driver = "no_such_module:Disk"\n', "stack[0].driver: cannot import module 'no_such_module'"),
        ('driver = "airp_drivers.simulation:NoDisk"\n', "stack[0].driver: module 'airp_drivers.simulation' has no 'NoDisk'"),
        ('driver = "airp_drivers.simulation:ServiceTime"\n', "expected an airp.Driver subclass"),
        ('driver = "sim-disk"\nparams = { latency = 1.0 }\n', "stack[0].params: sim-disk refused them: "),
        ('driver = "sim-disk"\nparams = { service = { distribution = "gamma", mean = 1.0 } }\n', "service.distribution: expected 'fixed' or 'exponential'"),
        ('driver = "sim-disk"\nparams = { service = -1.0 }\n', "service: expected a mean of 0 or more seconds"),
        ('driver = "cache-filter"\nparams = { capacity = -4 }\n', "capacity: expected an integer >= 0"),
    ],
)
def test_a_driver_that_cannot_be_made_is_named_before_anything_runs(stack: str, expected: str) -> None:
    assert expected in driver_error_of("[[stack]]\n" + stack)


def test_a_service_for_a_driver_without_one_is_refused() -> None:
    text = '[[stack]]\ndriver = "_simulate_drivers:HoldingDisk"\n[workload]\nrate = 1.0\nrequests = 5\nservice = 1.0\n'
    with pytest.raises(airp.SimulationDescriptionError, match=r"workload\.service: the function driver .* takes no service"):
        airp.simulate(airp.parse_simulation(text))


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--requests", "0"], "command line: workload.requests: expected at least 1 request"),
        (["--duration", "-1"], "command line: workload.duration: expected seconds > 0"),
        (["--requests", "100", "--seed", "1"], None),
    ],
)
def test_command_line_options_override_the_file_and_are_checked(
    arguments: list[str], expected: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["simulate", str(EXAMPLES / "mm1_disk.toml"), "--no-progress", *arguments])
    captured = capsys.readouterr()
    if expected is None:
        assert status == 0
        assert "requests sent 100," in captured.out
    else:
        assert status == 2
        assert expected in captured.err
        assert "Traceback" not in captured.err


def test_the_command_refuses_bad_files_with_exit_2_and_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["simulate", str(missing)]) == 2
    assert f"airp simulate: {missing}: file: cannot be read" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text('[[stack]]\ndriver = "sim-disk"\n[workload\n')
    assert main(["simulate", str(broken)]) == 2
    assert f"{broken}: line 3, column 10: malformed TOML" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["simulate", str(broken), "--requests", "5", "--duration", "5"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_command_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "airp", "simulate", str(EXAMPLES / "rw_lanes.toml"), "--requests", "300",
         "--backend", "trio", "--json", str(out)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "airp simulate: read and write lanes" in done.stdout
    assert "lost 0" in done.stdout
    assert json.loads(out.read_text())["backend"] == "trio"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stack]]\ndriver = "nope"\n[workload]\nrate = 1.0\nrequests = 3\n')
    done = subprocess.run([sys.executable, "-m", "airp", "simulate", str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "stack[0].driver: no airp driver plugin named 'nope' (available:" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
