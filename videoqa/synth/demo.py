"""`videoqa synth demo`: the whole pipeline, offline: procedural videos -> selection -> recurrent captions ->
QA -> records, with the oracle teacher reading each video's ground truth.

`--videos N` is the number of videos the selection keeps: candidates are rendered until N pass, and the ones
it drops stay in the source folder so the report shows the filters at work. The `simple` preset (one static
shot, no selection) makes the data the demo checkpoint is trained on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from videoqa.synth.oracle import OracleTeacher
from videoqa.synth.pipeline import RunConfig, finalize, run
from videoqa.synth.selection import SelectionConfig, select
from videoqa.synth.world import WorldConfig, make_scene, render_video

SOURCE = "procedural_v0"


def run_demo(
    out: str | Path,
    videos: int,
    seed: int,
    preset: Literal["dynamic", "simple"] = "dynamic",
    concurrency: int = 2,
    world: WorldConfig | None = None,
) -> dict:
    """Returns the run's stats (stats.json). `world` overrides the preset's world (sizes, durations)."""
    out = Path(out)
    world = world or WorldConfig.preset(preset)
    # The world is 192 px high: the paper's 480p floor would drop everything; its other filters apply as is.
    selection = SelectionConfig(min_height=0) if preset == "dynamic" else None
    src = out / "videos"
    kept, i = 0, 0
    bar = tqdm(total=videos, desc="procedural videos kept", unit="video")
    while kept < videos:
        if i >= 50 * videos:
            raise RuntimeError(f"only {kept} of {i} procedural videos passed selection; check the world preset")
        scene = make_scene(seed * 100_003 + i, world)
        i += 1
        path = src / f"{SOURCE}_{scene.seed}.mp4"
        if not path.is_file():
            render_video(scene, path, world)
        if selection is None or select(path, path.name, selection).kept:
            kept += 1
            bar.update(1)
    bar.close()
    cfg = RunConfig(
        source=src, out=out, name=SOURCE, video_prefix="videos/", selection=selection, concurrency=concurrency
    )
    asyncio.run(run(cfg, OracleTeacher()))
    return finalize(out, SOURCE)
