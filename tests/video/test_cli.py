"""`videoqa frames`."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.video.testing import make_test_video


def test_frames_prints_json_timestamps_and_writes_a_sheet(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "v.mp4", seconds=4, fps=12, gop=12)
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app,
        [
            "frames",
            str(video),
            "--frames",
            "5",
            "--policy",
            "exact",
            "--size",
            "64x48",
            "--json",
            "--sheet",
            str(sheet),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["frames"] == 5 and len(report["timestamps"]) == 5
    assert report["timestamps"][0] == 0.0 and report["timestamps"][-1] == round(47 / 12, 6)
    assert Image.open(sheet).size == (5 * 64, 48 + 14)


def test_frames_table_and_errors(tmp_path: Path) -> None:
    video = make_test_video(tmp_path / "v.mp4", seconds=2, fps=8)
    table = CliRunner().invoke(app, ["frames", str(video), "--fps", "1"])
    assert table.exit_code == 0 and "keyframe hits" in table.output
    text = tmp_path / "t.mp4"
    text.write_text("hello " * 100)
    bad = CliRunner().invoke(app, ["frames", str(text)])
    assert bad.exit_code == 1 and "not_a_video" in bad.output
    both = CliRunner().invoke(app, ["frames", str(video), "--frames", "3", "--fps", "1"])
    assert both.exit_code == 2


def test_frames_start_up_imports_only_what_it_uses(tmp_path: Path) -> None:
    """`videoqa frames` in a fresh interpreter loads no pydantic (typer 0.29's option adapters), torch, web app,
    worker pool or rich tables for --json: what its start-up is made of (docs/video.md), checked by module, not
    by a timer."""
    import subprocess
    import sys

    video = make_test_video(tmp_path / "v.mp4", seconds=1, fps=8)
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['videoqa', 'frames', {str(video)!r}, '--frames', '2', '--json']\n"
        "try:\n    runpy.run_module('videoqa.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split("MODULES ", 1)[1].split())
    assert {"av", "numpy", "videoqa.video.sampler"} <= loaded  # it did sample
    heavy = ["pydantic", "torch", "fastapi", "multiprocessing", "asyncio", "rich.table", "PIL"]
    assert [m for m in heavy if m in loaded] == []
