"""Bad input to the ``airp`` command line exits 2 with one clear line.

Each of these used to end in a traceback with exit 1, which ``docs/simulate.md`` reserves for
"a request was lost".  Each test goes through the command line's entry point (``main``, as
tests/test_cli.py and tests/test_trace_cli.py do; the last test runs ``python -m airp`` too) and
checks the exit status, that stderr is one line naming the command, the file and what is wrong,
and that no traceback is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airp._tools._cli import main

GOOD_WORKLOAD = "[workload]\nrate = 1.0\nrequests = 3\n"
DISK = '[[stack]]\ndriver = "sim-disk"\n'


def one_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The one line the command wrote to stderr (and nothing to stdout that looks like a run)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"airp {command}: "), err
    assert "Traceback" not in err
    return lines[0]


def simulate(tmp_path: Path, text: str) -> tuple[int, Path]:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    return main(["simulate", str(path), "--no-progress"]), path


# -- airp simulate --------------------------------------------------------------------------------


def test_simulate_a_deeply_nested_toml_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, path = simulate(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000 + "\n" + DISK + GOOD_WORKLOAD)
    assert status == 2
    line = one_line(capsys, "simulate")
    assert f"{path}: TOML: malformed: arrays or inline tables nested too deeply" in line


def test_simulate_a_deeply_nested_inline_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = simulate(tmp_path, "x = " + "{a = " * 5_000 + "1" + "}" * 5_000 + "\n" + DISK + GOOD_WORKLOAD)
    assert status == 2
    assert "nested too deeply" in one_line(capsys, "simulate")


def test_simulate_a_driver_class_without_add_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "no_add_device_driver.py").write_text(
        "import airp\n\nclass NoAddDevice(airp.Driver):\n    def __init__(self):\n        super().__init__('no-add')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    status, path = simulate(tmp_path, '[[stack]]\ndriver = "no_add_device_driver:NoAddDevice"\n' + GOOD_WORKLOAD)
    assert status == 2
    line = one_line(capsys, "simulate")
    assert f"{path}: stack[0].driver: 'no_add_device_driver:NoAddDevice' has no add_device(pdo) routine (AddDevice)" in line


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (2**32, "expected a 32-bit control code <= 0xffffffff, got 4294967296"),
        (2**80, f"expected a 32-bit control code <= 0xffffffff, got {2**80}"),
        (-1, "expected an integer >= 0, got -1"),
    ],
)
def test_simulate_an_out_of_range_ioctl(tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int, expected: str) -> None:
    status, _ = simulate(tmp_path, DISK + GOOD_WORKLOAD + f"mix = {{ device_control = 1 }}\nioctl = {code}\n")
    assert status == 2
    assert f"workload.ioctl: {expected}" in one_line(capsys, "simulate")


def test_simulate_a_huge_ioctl_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = simulate(
        tmp_path, DISK + GOOD_WORKLOAD + "mix = { device_control = 1 }\nioctl = 0x80032004\nioctl_output = 100000000000\n"
    )
    assert status == 2
    assert "workload.ioctl_output: expected an integer <= 16777216, got 100000000000" in one_line(capsys, "simulate")


@pytest.mark.parametrize("size", ["100000000000", "[512, 100000000000]", "16777217"])
def test_simulate_a_huge_size(tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str) -> None:
    status, _ = simulate(tmp_path, DISK + GOOD_WORKLOAD + f"size = {size}\n")
    assert status == 2
    assert "workload.size: expected at most 16777216 bytes (16 MiB) per request" in one_line(capsys, "simulate")


def test_simulate_the_largest_size_and_ioctl_output_still_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = simulate(
        tmp_path,
        DISK + GOOD_WORKLOAD + "size = 16777216\nmix = { read = 1, device_control = 1 }\nioctl = 0x80032004\nioctl_output = 16777216\n",
    )
    assert status == 0, capsys.readouterr().err
    assert "lost 0" in capsys.readouterr().out


def test_simulate_200_stack_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers = DISK + '[[stack]]\ndriver = "pass-through-filter"\n' * 199
    status, _ = simulate(tmp_path, layers + GOOD_WORKLOAD)
    assert status == 2
    assert "stack: 200 layers; at most 126 (an IRP has at most 127 stack locations" in one_line(capsys, "simulate")


def test_simulate_126_stack_layers_still_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers = DISK + '[[stack]]\ndriver = "pass-through-filter"\n' * 125
    status, _ = simulate(tmp_path, layers + GOOD_WORKLOAD)
    assert status == 0, capsys.readouterr().err
    assert "lost 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('arrival = "closed"\nconcurrency = 1000000000\nrequests = 3\n', "workload.concurrency: expected at most 10000 requesters"),
        ("rate = 1.0\nrequests = 3\nmix = { read = 1e308, write = 1e308 }\n", "workload.mix: the weights must add up to a finite number"),
        ("rate = 1.0\nrequests = 3\nservice = 1e308\n", "workload.service: expected at most 1e+12 seconds"),
        ("rate = 1.0\nrequests = 3\nservice = nan\n", "workload.service: expected at most 1e+12 seconds"),
        (
            'rate = 1.0\nrequests = 3\nservice = { distribution = "exponential", rate = 1e-300 }\n',
            "workload.service.rate: expected at least 1e-12 per second",
        ),
        ("rate = 1.0\nduration = 10.0\n[report]\nsamples = 100000000000\n", "report.samples: expected an integer <= 10000"),
    ],
)
def test_simulate_other_values_that_would_exhaust_memory_or_overflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    status, _ = simulate(tmp_path, DISK + "[workload]\n" + text)
    assert status == 2
    assert expected in one_line(capsys, "simulate")


# -- airp trace -----------------------------------------------------------------------------------


def trace(tmp_path: Path, content: bytes) -> tuple[int, Path]:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    return main(["trace", str(path), "--svg", str(tmp_path / "out.svg")]), path


def test_trace_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, path = trace(tmp_path, b'{"traceEvents": [\xff\xfe]}')
    assert status == 2
    assert f"{path}: not UTF-8 text (invalid start byte at byte 17)" in one_line(capsys, "trace")
    assert not (tmp_path / "out.svg").exists()


@pytest.mark.parametrize(
    ("slice_", "expected"),
    [
        ('"ts": NaN, "dur": 1', "has ts = nan; expected a finite number of microseconds"),
        ('"ts": 0, "dur": NaN', "has dur = nan; expected a finite number of microseconds"),
        ('"ts": Infinity, "dur": 1', "has ts = inf; expected a finite number of microseconds"),
        ('"ts": 0, "dur": -Infinity', "has dur = -inf; expected a finite number of microseconds"),
        ('"ts": 1e308, "dur": 1e308', "is a slice that ends at inf; expected a finite end"),
    ],
)
def test_trace_nan_or_infinite_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str], slice_: str, expected: str) -> None:
    text = '{"traceEvents": [{"ph": "X", "pid": 1, "tid": 1, "name": "read", ' + slice_ + "}]}"
    status, path = trace(tmp_path, text.encode())
    assert status == 2
    assert f"{path}: traceEvents[0] {expected}" in one_line(capsys, "trace")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([{"ph": "i", "pid": 1, "tid": 1}], "traceEvents[0] is an instant without ts"),
        ([{"ph": "M", "name": "process_name", "pid": 1}], "traceEvents[0] names a track without pid and args.name"),
        ([{"ph": "X", "ts": 0, "dur": 1, "pid": 1, "tid": 1, "args": [1]}], "has args = [1]; expected an object"),
        ([{"ph": "s", "ts": 0, "pid": 1, "tid": [1]}], "has tid = [1]; expected a number or a string"),
        ([{"ph": "f", "ts": 0}], "traceEvents[0] is a flow end without ts, pid and tid"),
    ],
)
def test_trace_events_without_what_is_drawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], events: list[dict[str, object]], expected: str
) -> None:
    status, _ = trace(tmp_path, json.dumps({"traceEvents": events}).encode())
    assert status == 2
    assert expected in one_line(capsys, "trace")


def test_trace_json_nested_too_deeply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = trace(tmp_path, b'{"traceEvents": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 2
    assert "JSON nested too deeply to read" in one_line(capsys, "trace")


# -- airp demo --trace ----------------------------------------------------------------------------


def test_demo_trace_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--trace", str(tmp_path)]) == 2
    line = one_line(capsys, "demo")
    assert line == f"airp demo: cannot write the trace to {str(tmp_path)!r}: it is a directory; give a file name such as demo.json"


def test_demo_trace_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing" / "demo.json"
    assert main(["demo", "--trace", str(target)]) == 2
    line = one_line(capsys, "demo")
    assert f"cannot write the trace to {str(target)!r}: its directory {str(tmp_path / 'missing')!r} does not exist" in line
    assert not (tmp_path / "missing").exists()


def test_demo_refuses_the_trace_file_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--trace", str(tmp_path)]) == 2
    assert "airp demo: IRPs travelling" not in capsys.readouterr().out  # nothing ran


# -- the real entry point: python -m airp ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (["simulate", "nested.toml"], {"nested.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"}, "nested too deeply"),
        (["trace", "nan.json", "--svg", "out.svg"], {"nan.json": '{"traceEvents": [{"ph": "X", "ts": NaN, "dur": 1, "pid": 1, "tid": 1}]}'}, "ts = nan"),
        (["demo", "--trace", "."], {}, "it is a directory"),
    ],
)
def test_python_m_airp_exits_2_with_one_line(tmp_path: Path, args: list[str], files: dict[str, str], expected: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run([sys.executable, "-m", "airp", *args], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert expected in done.stderr
