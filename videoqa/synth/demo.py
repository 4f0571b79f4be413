"""`videoqa synth demo`: procedural videos + the oracle teacher, written as LLaVA-Video-178K json files and a
data-mix YAML (list of {json_path, sampling_strategy}, as LLaVA-NeXT's train.py reads)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tqdm import tqdm

from videoqa.synth.oracle import records
from videoqa.synth.world import WorldConfig, make_scene, render_video

SOURCE = "procedural_v0"


def run_demo(out: str | Path, videos: int, seed: int, cfg: WorldConfig | None = None) -> dict[str, int]:
    out = Path(out)
    cfg = cfg or WorldConfig()
    collected: dict[str, list] = {"caption": [], "open_ended": [], "multiple_choice": []}
    for i in tqdm(range(videos), desc="procedural videos", unit="video"):
        scene = make_scene(seed * 100_003 + i, cfg)
        rel = f"videos/{SOURCE}_{scene.seed}.mp4"
        render_video(scene, out / rel, cfg)
        for kind, recs in records(scene, rel, SOURCE).items():
            collected[kind].extend(recs)
    mix = []
    for kind, recs in collected.items():
        path = out / f"{SOURCE}_{kind}.json"
        path.write_text(json.dumps(recs, indent=1))
        mix.append({"json_path": path.name, "sampling_strategy": "all"})
    (out / "data_mix.yaml").write_text(yaml.safe_dump({"datasets": mix}, sort_keys=False))
    return {kind: len(recs) for kind, recs in collected.items()}
