"""Streaming training data: the batch sampler's order and sharding, length grouping, bad videos skipped in worker
processes, the frame cache, and a streamed training run with validation and TensorBoard tracking."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import AutoTokenizer

from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.training.stream import (
    Collator,
    FrameCache,
    GroupedBatchSampler,
    VideoQADataset,
    estimate_lengths,
    make_loader,
)
from videoqa.video import SamplingSpec, sample_frames
from videoqa.video.testing import make_test_video


def _epoch(sampler: GroupedBatchSampler, epoch: int, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_sampler_order_follows_seed_and_epoch_and_ranks_split_the_same_global_batches() -> None:
    lengths = [random.Random(i).randint(10, 500) for i in range(50)]
    one = GroupedBatchSampler(lengths, batch_size=4, world=1, seed=7)
    e0 = _epoch(one, 0)
    assert len(e0) == len(one) == 12  # 50 // 4, the tail dropped
    assert e0 == _epoch(GroupedBatchSampler(lengths, batch_size=4, world=1, seed=7), 0)  # from (seed, epoch) alone
    assert _epoch(one, 1) != e0 and _epoch(GroupedBatchSampler(lengths, 4, 1, seed=8), 0) != e0
    flat = [i for b in e0 for i in b]
    assert len(set(flat)) == len(flat) == 48  # no example twice in an epoch
    assert _epoch(one, 0, start=5) == e0[5:]  # resume mid-epoch

    # 2 ranks x batch 2: rank r takes its slice of every global batch; together exactly one process's batches.
    r0, r1 = (_epoch(GroupedBatchSampler(lengths, 2, world=2, rank=r, seed=7), 0) for r in (0, 1))
    assert len(r0) == len(r1) == len(e0)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == e0


def test_length_grouping_cuts_padding() -> None:
    lengths = [random.Random(i).randint(100, 4000) for i in range(640)]

    def padding(group: bool) -> int:
        batches = _epoch(GroupedBatchSampler(lengths, 8, seed=0, group_by_length=group), 0)
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(True) < 0.2 * padding(False), (padding(True), padding(False))
    batches = _epoch(GroupedBatchSampler(lengths, 8, seed=0), 0)
    assert max(lengths[i] for i in batches[0]) == max(lengths[: len(batches) * 8])  # the longest batch first


def _records(videos: list[str]) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "video": v,
            "conversations": [
                {"from": "human", "value": f"<image>\nWhat is shown in clip {i}?"},
                {"from": "gpt", "value": "A pattern."},
            ],
        }
        for i, v in enumerate(videos)
    ]


def test_missing_and_unreadable_videos_are_skipped_and_counted_in_worker_processes(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    make_test_video(tmp_path / "good.mp4", seconds=1, fps=8, size=(64, 48))
    (tmp_path / "garbage.mp4").write_bytes(b"this is not a video" * 100)
    videos = ["good.mp4", "missing.mp4", "good.mp4", "garbage.mp4", "good.mp4", "good.mp4", "missing.mp4", "good.mp4"]
    model_cfg = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint).config
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    spec = SamplingSpec(num_frames=2, size=(model_cfg.image_size, model_cfg.image_size))
    args = (tok, model_cfg.layout, model_cfg.grid, model_cfg.video_token_id, model_cfg.image_size, 4096)
    dataset = VideoQADataset(_records(videos), tmp_path, spec, *args)
    sampler = GroupedBatchSampler([1] * len(videos), batch_size=2, seed=0, group_by_length=False)
    batches = list(make_loader(dataset, sampler, Collator(tok.pad_token_id, model_cfg.video_token_id), 2))
    assert len(batches) == 4
    bad = {1, 3, 6}
    for b in batches:
        assert b.input_ids.shape[0] == 2  # a skipped record is replaced: batches keep their size
        assert not bad & set(b.indices)
        assert b.visual_tokens == 2 * LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint).num_video_tokens(2)
    skipped = [s for b in batches for s in b.skipped]
    assert sorted(i for i, _ in skipped) == [1, 3, 6]  # each bad record counted once
    assert any("NotAVideoError" in reason for _, reason in skipped)
    visual = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint).num_video_tokens(2)
    words = 8  # "What is shown in clip 0? A pattern.": the <image> tag is counted as visual tokens
    assert estimate_lengths(dataset.records, model_cfg.layout, model_cfg.grid, 2)[0] == visual + words


def test_frame_cache_is_content_addressed_and_size_bounded(tmp_path: Path) -> None:
    spec = SamplingSpec(num_frames=3, size=(32, 32))
    a = make_test_video(tmp_path / "a.mp4", seconds=1, fps=8, size=(64, 48))
    copy = tmp_path / "elsewhere" / "same.mp4"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    cache = FrameCache(tmp_path / "cache", spec, max_bytes=10**9)
    frames, duration, stamps = cache.get(a)
    again = cache.get(copy)  # the same content under another path: the same entry
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    want = sample_frames(a, spec)
    assert np.array_equal(frames, want.frames) and np.array_equal(again[0], want.frames)
    assert stamps == want.timestamps and duration == want.duration
    other_spec = FrameCache(tmp_path / "cache", SamplingSpec(num_frames=2, size=(32, 32)), max_bytes=10**9)
    assert other_spec.key(a) != cache.key(a)  # the sampling is part of the address

    entry = next((tmp_path / "cache").glob("*.npz")).stat().st_size
    small = FrameCache(tmp_path / "small", spec, max_bytes=int(2.5 * entry))
    paths = [make_test_video(tmp_path / f"v{i}.mp4", seconds=1 + i, fps=8, size=(64, 48)) for i in range(4)]
    for p in paths[:2]:
        small.get(p)
    small.get(paths[0])  # a hit: paths[0] is now more recently used than paths[1]
    for p in paths[2:]:
        small.get(p)
        small.evict()
    kept = {p.name for p in (tmp_path / "small").glob("*.npz")}
    assert sum((tmp_path / "small" / n).stat().st_size for n in kept) <= 2.5 * entry
    assert kept == {f"{small.key(p)}.npz" for p in paths[-2:]}  # the least recently used went first
    small.get(paths[1])
    small.get(paths[2])  # a hit
    small.get(paths[0])
    small.evict()
    kept = {p.name for p in (tmp_path / "small").glob("*.npz")}
    assert kept == {f"{small.key(p)}.npz" for p in (paths[2], paths[0])}, "LRU is by use, not by write"


@pytest.mark.slow
def test_streamed_run_skips_bad_videos_and_tracks_loss_lr_validation_and_throughput(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.training.test_train import SMALL
    from videoqa.synth.demo import run_demo
    from videoqa.training.config import TrainConfig, load_config
    from videoqa.training.train import train

    run_demo(tmp_path / "data", videos=4, seed=3, preset="simple", world=SMALL)
    records = json.loads((tmp_path / "data" / "procedural_v0_multiple_choice.json").read_text())[:10]
    records[2] = records[2] | {"video": "videos/missing.mp4"}
    (tmp_path / "data" / "garbage.mp4").write_bytes(b"\0" * 5000)
    records[7] = records[7] | {"video": "garbage.mp4"}
    (tmp_path / "data" / "train.json").write_text(json.dumps(records))
    (tmp_path / "data" / "val.json").write_text(json.dumps(records[:4]))
    cfg = {
        "model": "tiny",
        "data": str(tmp_path / "data" / "train.json"),
        "val_data": str(tmp_path / "data" / "val.json"),
        "val_every": 2,
        "output_dir": str(tmp_path / "run"),
        "num_frames": 2,
        "batch_size": 5,
        "max_steps": 2,
        "num_workers": 2,
        "lr": 1e-3,
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("# videoqa train recipe.yaml\n" + yaml.safe_dump(cfg))
    train(load_config(recipe))
    run = tmp_path / "run"

    skipped = [json.loads(line) for line in (run / "skipped.jsonl").read_text().splitlines()]
    assert {s["record"] for s in skipped} == {2, 7}  # the epoch went on without them
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["skipped"] == len(skipped)
    assert set(rows[0]["lrs"]) == {"projector", "vision", "llm"}
    val = [json.loads(line) for line in (run / "val_loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val] == [2]

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("train/loss", "lr/llm", "lr/vision", "lr/projector", "val/loss", "throughput/samples_per_s"):
        assert tag in tags, tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Scalars("val/loss")[0].value == pytest.approx(val[0]["val_loss"], rel=1e-5)
    assert events.Scalars("throughput/visual_tokens_per_s")[0].value > 0

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert TrainConfig(**resolved) == load_config(recipe)  # every setting, defaults included
    assert resolved["num_workers"] == 2 and "group_by_length" in resolved
