"""Streaming training data: peak memory and time to the first step as the dataset grows, and throughput with
0, 1 and 2 DataLoader workers.

Makes a few procedural videos (synth demo), then 178K-format record files of 1k and 20k records that reuse them
(records, not decoding, are what grows), and runs `videoqa.training.train` in a fresh process per setting on a
tiny random model. Peak memory is the training process's max RSS plus its largest worker's; time to first step
is from process start of train() to the end of step 1. Prints a markdown table.
Usage: .venv/bin/python benchmarks/bench_training_data.py [--records 1000 20000] [--workers 0 1 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CHILD = """
import json, resource, sys
from videoqa.training.config import load_config
from videoqa.training.train import train
train(load_config(sys.argv[1]))
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rss_mib": me, "worker_rss_mib": kids}))
"""


def make_data(root: Path, videos: int, sizes: list[int]) -> dict[int, Path]:
    from videoqa.synth.demo import run_demo

    run_demo(root, videos=videos, seed=5, preset="simple")
    base = json.loads((root / "procedural_v0_multiple_choice.json").read_text())
    out = {}
    for n in sizes:
        records = [dict(base[i % len(base)], id=f"r{i}") for i in range(n)]
        out[n] = root / f"records_{n}.json"
        out[n].write_text(json.dumps(records))
    return out


def setup_seconds(data: Path, checkpoint: Path, frames: int) -> float:
    """What still grows with the dataset before step 1: reading the records and estimating their lengths."""
    import time

    from videoqa.model.config import LlavaVideoConfig
    from videoqa.training.data import load_records
    from videoqa.training.stream import estimate_lengths

    cfg = LlavaVideoConfig.from_pretrained(checkpoint)
    t0 = time.perf_counter()
    records, _ = load_records(data)
    estimate_lengths(records, cfg.layout, cfg.grid, frames)
    return time.perf_counter() - t0


def run(work: Path, data: Path, workers: int, steps: int, frames: int, batch: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    recipe = {
        "model": "tiny",
        "data": str(data),
        "output_dir": str(work / "run"),
        "num_frames": frames,
        "batch_size": batch,
        "max_steps": steps,
        "num_workers": workers,
        "tensorboard": False,
        "lr": 1e-3,
    }
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(work / "recipe.yaml")], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    mem = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (work / "run" / "loss.jsonl").read_text().splitlines()]
    steady = rows[2:] or rows  # steps 1-2 include the workers' start
    return {
        **mem,
        "first_step_s": rows[0]["elapsed_s"],
        "samples_per_s": sum(r["samples_per_s"] for r in steady) / len(steady),
        "visual_tokens_per_s": sum(r["visual_tokens_per_s"] for r in steady) / len(steady),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--videos", type=int, default=8, help="distinct procedural videos the records reuse")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_data(root / "data", args.videos, args.records)
        print(
            "| records | workers | peak RSS main (MiB) | peak RSS worker (MiB) | time to first step (s) "
            "| of which records + lengths (s) | samples/s | visual tokens/s |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        settings = [(n, 2 if 2 in args.workers else args.workers[-1]) for n in args.records]
        settings += [(args.records[0], w) for w in args.workers if (args.records[0], w) not in settings]
        for n, w in settings:
            work = root / f"run_{n}_{w}"
            r = run(work, files[n], w, args.steps, args.frames, args.batch)
            setup = setup_seconds(files[n], work / "run" / "init", args.frames)
            print(
                f"| {n} | {w} | {r['rss_mib']:.0f} | {r['worker_rss_mib']:.0f} | {r['first_step_s']:.1f} "
                f"| {setup:.2f} | {r['samples_per_s']:.2f} | {r['visual_tokens_per_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
