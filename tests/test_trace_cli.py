"""``airp demo --trace`` and ``airp trace --svg/--png``: a real run written, loaded and drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import airp
from airp import IrpMonitor
from airp._tools._cli import main
from airp._tools._demo import run_demo
from airp._tools._timeline import draw_timeline


def run_airp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airp", *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_demo_trace_then_trace_svg_and_png(tmp_path: Path) -> None:
    demo = run_airp("demo", "--trace", "demo.json", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "The trace is in demo.json" in demo.stdout
    trace = json.loads((tmp_path / "demo.json").read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"toaster", "audit-filter", "pass-through-filter"} <= names
    drawn = run_airp("trace", "demo.json", "--svg", "demo.svg", "--png", "demo.png", "--title", "airp demo", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.splitlines() == ["wrote demo.svg", "wrote demo.png"]
    svg = (tmp_path / "demo.svg").read_text()
    assert svg.startswith("<?xml")
    assert "<svg" in svg
    assert "toaster" in svg  # track names are kept as text
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.anyio
async def test_run_demo_writes_its_trace_in_process(tmp_path: Path) -> None:
    lines: list[str] = []
    traced = await run_demo(lines.append, latency=0, trace=tmp_path / "t.json")
    trace = json.loads((tmp_path / "t.json").read_text())
    irps = {e["args"]["irp"] for e in trace["traceEvents"] if e["ph"] == "X" and "location" in e["args"]}
    assert len(irps) == traced
    assert any("ui.perfetto.dev" in line for line in lines)


def test_trace_command_refuses_a_bad_file_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"something": 1}')
    assert main(["trace", str(bad), "--svg", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err
    assert '"traceEvents"' in err
    assert not (tmp_path / "x.svg").exists()
    assert main(["trace", str(tmp_path / "missing.json"), "--svg", str(tmp_path / "x.svg")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_trace_command_needs_an_output_with_the_right_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "t.json"
    airp.write_chrome_trace(IrpMonitor(), good)
    assert main(["trace", str(good)]) == 2
    assert "give --svg OUT.svg and/or --png OUT.png" in capsys.readouterr().err
    assert main(["trace", str(good), "--png", str(tmp_path / "x.svg")]) == 2
    assert "--png needs a file name ending in .png" in capsys.readouterr().err


def test_draw_timeline_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.svg or \.png"):
        draw_timeline(IrpMonitor(), tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="width must be a positive"):
        draw_timeline(IrpMonitor(), tmp_path / "x.svg", width=0)
    with pytest.raises(TypeError, match="needs an IrpMonitor, a Chrome trace or the path"):
        draw_timeline(3, tmp_path / "x.svg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="traceEvents"):
        draw_timeline({"nothing": []}, tmp_path / "x.svg")


def test_draw_timeline_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'airp\[plot\]'"):
        draw_timeline(IrpMonitor(), tmp_path / "x.svg")


def test_an_empty_trace_still_draws(tmp_path: Path) -> None:
    out = draw_timeline(IrpMonitor(), tmp_path / "empty.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
