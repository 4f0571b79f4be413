"""Diagnostic: do a checkpoint's visual tokens carry which object colours a procedural video contains?

Fits a linear probe (logistic regression per colour, on the mean and the max of the projected visual tokens
over all frames) on training videos and reports its accuracy on held-out videos, next to the majority-class
baseline. Used to tell "the tower cannot see it" from "the LM does not read it out" (docs/training.md).

    python benchmarks/probe_object_colours.py --train data/demo --held data/heldout CKPT [CKPT ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.synth.world import COLOURS
from videoqa.video import SamplingSpec, sample_frames

COLOUR_NAMES = sorted(COLOURS)


def video_features(model: LlavaVideoForCausalLM, videos: list[Path], num_frames: int) -> torch.Tensor:
    """[V, 2H]: mean and max over every projected visual token of each video."""
    size = model.config.image_size
    rows = []
    for video in track(videos, description="encoding", transient=True):
        got = sample_frames(video, SamplingSpec(num_frames=num_frames, policy="exact", size=(size, size)))
        with torch.no_grad():
            tokens = model.encode_frames(frames_to_pixel_values(got.frames, size)).flatten(0, 1)  # [F*g*g, H]
        rows.append(torch.cat([tokens.mean(0), tokens.max(0).values]))
    return torch.stack(rows)


def colour_labels(videos: list[Path]) -> torch.Tensor:
    """[V, C]: 1 where an object of that colour appears (from the ground truth written next to each video)."""
    rows = []
    for video in videos:
        truth = json.loads(video.with_suffix(".json").read_text())
        present = {o["colour"] for o in truth["objects"]} | {o["colour_after"] for o in truth["objects"]}
        rows.append([name in present for name in COLOUR_NAMES])
    return torch.tensor(rows, dtype=torch.float32)


def probe(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
    """Held-out accuracy per colour of an L2-regularised logistic regression on standardised features."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(x_train.shape[1], y_train.shape[1], requires_grad=True)
    b = torch.zeros(y_train.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y_train) + 1e-3 * w.square().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (((x_test @ w + b) > 0).float() == y_test).float().mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--train", type=Path, required=True, help="A `videoqa synth demo` output folder.")
    parser.add_argument("--held", type=Path, required=True, help="Another one, made with other seeds.")
    parser.add_argument("--max-train", type=int, default=400)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    train = sorted((args.train / "videos").glob("*.mp4"))[: args.max_train]
    held = sorted((args.held / "videos").glob("*.mp4"))
    y_train, y_held = colour_labels(train), colour_labels(held)
    majority = torch.maximum(y_held.mean(0), 1 - y_held.mean(0))
    title = f"held-out accuracy of a linear probe for 'an object of this colour appears' ({len(held)} videos)"
    table = Table(title=title)
    table.add_column("checkpoint")
    for name in COLOUR_NAMES:
        table.add_column(name, justify="right")
    table.add_row("majority class", *(f"{a:.0%}" for a in majority.tolist()))
    for ckpt in args.checkpoints:
        model = LlavaVideoForCausalLM.from_pretrained(ckpt).eval()
        acc = probe(
            video_features(model, train, args.frames), y_train, video_features(model, held, args.frames), y_held
        )
        table.add_row(str(ckpt), *(f"{a:.0%}" for a in acc.tolist()))
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
