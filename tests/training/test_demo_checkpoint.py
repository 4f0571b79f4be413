"""The shipped demo checkpoint (videoqa/assets/demo_checkpoint, built by `make demo-checkpoint`) on freshly
generated held-out procedural videos, through the same vLLM engine path the service uses (`videoqa eval`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from videoqa.model.tiny import DEMO_CHECKPOINT
from videoqa.synth.demo import run_demo
from videoqa.training.evaluate import evaluate_engine

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    run_demo(out, videos=30, seed=77, preset="simple")  # seeds the checkpoint never saw (trained on seed 1)
    return out


def test_the_demo_checkpoint_is_shipped_small_and_records_its_frames() -> None:
    assert (DEMO_CHECKPOINT / "config.json").is_file(), "run `make demo-checkpoint` and commit the result"
    size = sum(p.stat().st_size for p in DEMO_CHECKPOINT.iterdir())
    assert size < 20 * 2**20, size
    from videoqa.model.config import LlavaVideoConfig

    assert LlavaVideoConfig.from_pretrained(DEMO_CHECKPOINT).num_frames == 8


def test_the_demo_checkpoint_answers_held_out_questions_above_chance(held_out: Path) -> None:
    # Measured on 100 held-out videos (docs/demo_eval): option likelihood 53.6% vs 31.5% chance; background
    # colour and non-existent actions 100%; generated letters 39.4%. The thresholds guard that level.
    result = asyncio.run(evaluate_engine(DEMO_CHECKPOINT, held_out, max_open_ended=40))
    overall = result["overall"]
    assert overall["n"] >= 150
    assert overall["likelihood_accuracy"] >= overall["chance"] + 0.1, result
    for kind in ("Description-Scene", "Non-Existent Actions with Existent Scene"):
        assert result["by_type"][kind]["likelihood_accuracy"] >= 0.9, (kind, result["by_type"][kind])
    assert result["open_ended"]["token_f1"] > 0.5
