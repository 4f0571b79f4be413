"""Dynamic-video selection against videos whose scene cuts we know (the procedural world's shot boundaries)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videoqa.synth.selection import SelectionConfig, detect_scenes, select
from videoqa.synth.world import WorldConfig, make_scene, render_video

WORLD = WorldConfig(min_seconds=6.0, max_seconds=20.0, min_shots=2, max_shots=4, fps_choices=(8, 12))
CFG = SelectionConfig(min_height=0)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> list[tuple[Path, list[float], float]]:
    out = tmp_path_factory.mktemp("selection")
    videos = []
    for seed in range(6):
        scene = make_scene(100 + seed, WORLD)
        path = render_video(scene, out / f"v{seed}.mp4", WORLD)
        videos.append((path, [s.start for s in scene.shots[1:]], scene.shots[-1].end))
    return videos


def test_detected_cuts_are_the_rendered_shot_boundaries(rendered) -> None:
    step = 1.0 / CFG.detect_fps
    for path, cuts, duration in rendered:
        scenes = detect_scenes(path, CFG)
        found = [start for start, _ in scenes[1:]]
        assert len(found) == len(cuts), (path.name, found, cuts)
        for got, want in zip(found, cuts, strict=True):
            # Detection looks at detect_fps frames: a cut shows up at the first sampled frame after it.
            assert want - 1e-3 <= got <= want + step + 1e-3, (path.name, got, want)
        assert scenes[0][0] == 0.0
        assert scenes[-1][1] == pytest.approx(duration, abs=0.2)


def test_selection_keeps_multi_scene_videos_and_says_why_it_drops(rendered) -> None:
    for path, cuts, _ in rendered:
        got = select(path, path.name, CFG)
        assert got.kept == (len(cuts) + 1 >= CFG.min_scenes), got
        if not got.kept:
            assert got.reasons == [f"{len(cuts) + 1} scene(s), fewer than {CFG.min_scenes}"]
    strict = select(rendered[0][0], "v0", SelectionConfig())  # paper floor: 480p, our frames are 192-240 px
    assert not strict.kept and any("below 480 px" in r for r in strict.reasons)
    assert not strict.scenes  # cheap checks first: no detection was run


def test_unreadable_files_are_dropped_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    got = select(bad, "bad.mp4", CFG)
    assert not got.kept and got.reasons and got.reasons[0].startswith("unreadable:")
