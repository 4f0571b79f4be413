"""Training: data mixes, loss masking, config errors, a short run that lowers the loss, and exact resume."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.utils.recipes import write_recipe
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.synth.demo import run_demo
from videoqa.synth.world import WorldConfig
from videoqa.training.config import load_config
from videoqa.training.data import IGNORE, _apply_strategy, build_example, load_records
from videoqa.training.evaluate import evaluate_engine
from videoqa.training.train import _latest_sharded, train

pytestmark = pytest.mark.slow
SMALL = WorldConfig(
    width=128,
    height=96,
    fps=4,
    min_seconds=4,
    max_seconds=6,
    max_objects=3,
    object_size=24,
    max_shots=1,
    pan_prob=0,
    change_prob=0,
    wall_prob=0,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    run_demo(out, videos=16, seed=3, preset="simple", world=SMALL)
    return out


def _recipe(tmp: Path, data: Path, **kw) -> Path:
    cfg = {
        "model": "tiny",
        "data": str(data / "procedural_v0_multiple_choice.json"),
        "output_dir": str(tmp / "run"),
        "num_frames": 4,
        "batch_size": 4,
        "max_steps": 6,
        "lr": 1e-3,
        "lr_vision": 1e-3,
        "seed": 0,
    } | kw
    return write_recipe(tmp, cfg)


def test_data_mix_strategies() -> None:
    recs = [{"i": i} for i in range(10)]
    rng = random.Random(0)
    assert _apply_strategy(recs, "all", rng) == recs
    assert _apply_strategy(recs, "first:3", rng) == recs[:3]
    assert _apply_strategy(recs, "end:20%", rng) == recs[-2:]
    assert len(_apply_strategy(recs, "random:50%", rng)) == 5
    with pytest.raises(ValueError, match="sampling_strategy"):
        _apply_strategy(recs, "some:3", rng)


def test_only_the_assistant_answer_carries_labels(data: Path, tiny_checkpoint: Path) -> None:
    records, root = load_records(data / "data_mix.yaml")
    assert {r["data_source"] for r in records} == {"procedural_v0"}
    rec = next(r for r in records if "Options:" in r["conversations"][0]["value"])
    model = LlavaVideoForCausalLM.from_pretrained(tiny_checkpoint)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    import numpy as np

    frames = np.zeros((4, 126, 126, 3), np.uint8)
    ids, labels = build_example(
        rec, frames, 5.0, [0.0, 1.0, 2.0, 3.0], tok, model.config.layout, model.config.grid, model.config.video_token_id
    )
    assert len(ids) == len(labels)
    assert ids.count(model.config.video_token_id) == model.num_video_tokens(4)
    learned = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE])
    assert learned == rec["conversations"][1]["value"] + "<|im_end|>"
    assert "The video lasts for 5.00 seconds" in tok.decode(ids)


def test_config_errors_name_the_bad_value(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        load_config(_recipe(tmp_path, data, batch_size=0))
    with pytest.raises(ValueError, match="bogus"):
        load_config(_recipe(tmp_path, data, bogus=1))


def test_a_short_run_lowers_the_loss_and_writes_a_servable_checkpoint(tmp_path: Path, data: Path) -> None:
    # Length grouping (the default) gives batches of systematically different answer lengths, so first and last steps
    # would compare different kinds of batches; ungrouped batches are alike, so their loss shows the learning alone.
    recipe = _recipe(tmp_path, data, max_steps=40, batch_size=8, warmup_ratio=0.05, group_by_length=False)
    final = train(load_config(recipe))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    model = LlavaVideoForCausalLM.from_pretrained(final)  # the served format, loadable as is
    assert model.config.layout == LlavaVideoForCausalLM.from_pretrained(tmp_path / "run" / "init").config.layout
    assert (final / "tokenizer.json").is_file()


@pytest.mark.engine
def test_a_short_run_answers_held_out_videos_above_chance(tmp_path: Path) -> None:
    # The question whose answer only the pixels carry and that a from-scratch tiny model learns in minutes:
    # the background colour (4 options, uniform over videos, so answer priors give 25%). Other types either
    # leak through priors (non-existent actions are always "no" here) or need thousands of steps (docs/training.md).
    run_demo(tmp_path / "train", videos=64, seed=11, preset="simple", world=SMALL)
    run_demo(tmp_path / "held", videos=16, seed=12, preset="simple", world=SMALL)
    records = json.loads((tmp_path / "train" / "procedural_v0_multiple_choice.json").read_text())
    scene = [r for r in records if r["question_type"] == "Description-Scene"]
    (tmp_path / "train" / "scene.json").write_text(json.dumps(scene))
    recipe = _recipe(tmp_path, tmp_path / "train", max_steps=300, batch_size=8, warmup_ratio=0.05)
    recipe.write_text(recipe.read_text().replace("procedural_v0_multiple_choice.json", "scene.json"))
    final = train(load_config(recipe))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert sum(losses[-20:]) / 20 < 0.1 * sum(losses[:20]) / 20, losses

    result = asyncio.run(evaluate_engine(final, tmp_path / "held", max_open_ended=0))  # the served path: vLLM
    got = result["by_type"]["Description-Scene"]
    assert got["n"] == 16 and got["chance"] == 0.25
    # Measured: 14 of 16 (87.5%). 10 of 16 by luck alone has probability < 1e-3.
    assert got["likelihood_accuracy"] >= 10 / 16, got


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path: Path, data: Path) -> None:
    straight = train(load_config(_recipe(tmp_path / "a", data)))
    interrupted = _recipe(tmp_path / "b", data)
    state = train(load_config(interrupted, {"stop_after": 3}))
    assert state.name == "train_state.pt" and not (tmp_path / "b" / "run" / "final").exists()
    resumed = train(load_config(interrupted))
    a = LlavaVideoForCausalLM.from_pretrained(straight).checkpoint_state_dict()
    b = LlavaVideoForCausalLM.from_pretrained(resumed).checkpoint_state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def _torchrun(tmp: Path, data: Path, **kw) -> Path:
    import os
    import subprocess
    import sys

    recipe = _recipe(tmp, data, **kw)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "videoqa.training.train", str(recipe)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run"


RUN = {"max_steps": 4, "grad_accum": 2, "num_workers": 1}  # the torchrun tests' runs (2 processes x batch 2)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data: Path) -> tuple[dict, list[dict]]:
    """What the 2-process runs must match: one process x batch 4 (weights, and loss.jsonl rows)."""
    tmp = tmp_path_factory.mktemp("one")
    single = train(load_config(_recipe(tmp, data, batch_size=4, **RUN)))
    rows = [json.loads(line) for line in (tmp / "run" / "loss.jsonl").read_text().splitlines()]
    return LlavaVideoForCausalLM.from_pretrained(single).checkpoint_state_dict(), rows


def _same_grad_norms(rows: list[dict], reference: list[dict]) -> None:
    """The logged (pre-clip) gradient norm is over the whole model's gradient, every rank's part of it, so it
    equals one process's; and it is above grad_clip (1.0), so clipping acted on it."""
    got, want = [r["grad_norm"] for r in rows], [r["grad_norm"] for r in reference]
    assert len(got) == len(want) == 4 and min(want) > 1.0, want
    assert all(math.isclose(g, w, rel_tol=1e-4) for g, w in zip(got, want, strict=True)), (got, want)


def test_torchrun_two_gloo_processes_with_accumulation_equal_one_process(
    tmp_path: Path, data: Path, one_process: tuple[dict, list[dict]]
) -> None:
    # One process x batch 4 and 2 processes x batch 2 see the same examples per micro-batch (each rank takes its
    # slice of the global batch) and the loss is the mean over every labelled token of the step, so the weights
    # agree up to float reduction order, with gradient accumulation over 2 micro-batches.
    one, one_rows = one_process
    ddp = _torchrun(tmp_path / "ddp", data, batch_size=2, **RUN)
    rows = [json.loads(line) for line in (ddp / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # logged once (rank 0), not twice
    assert {r["examples"] for r in rows} == {8}  # 2 processes x batch 2 x 2 micro-batches per step
    assert {r["grad_syncs"] for r in rows} == {1}  # no_sync: gradients reduced on the last micro-batch only
    _same_grad_norms(rows, one_rows)
    final = LlavaVideoForCausalLM.from_pretrained(ddp / "final").checkpoint_state_dict()
    init = LlavaVideoForCausalLM.from_pretrained(ddp / "init").checkpoint_state_dict()
    assert any(not torch.equal(final[k], init[k]) for k in final)
    worst = max((final[k] - one[k]).abs().max().item() for k in final)
    assert worst < 1e-4, worst


def test_resume_takes_the_latest_complete_sharded_checkpoint(tmp_path: Path) -> None:
    # A save writes step-N.tmp and renames it once every rank is done: a crash mid-save leaves a .tmp, never
    # resumed from. Steps are zero-padded, so name order is step order (step 10 after step 9).
    for name in ("step-00000009", "step-00000010", "step-00000012.tmp"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    latest = _latest_sharded(tmp_path)
    assert latest is not None and latest.name == "step-00000010"
    assert _latest_sharded(tmp_path / "elsewhere") is None


def test_consolidate_refuses_a_folder_that_is_not_a_sharded_checkpoint(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from videoqa.cli import app

    done = CliRunner().invoke(app, ["consolidate", str(tmp_path), str(tmp_path / "out")])
    assert done.exit_code == 2 and "(no .metadata)" in done.output, done.output
    assert not (tmp_path / "out").exists()


def test_fsdp_sharded_checkpoint_resumes_and_consolidates_to_one_process_weights(
    tmp_path: Path, data: Path, one_process: tuple[dict, list[dict]]
) -> None:
    """FSDP2 shards every layer across the 2 processes; the math is the same as one process, so are the weights.
    Interrupted after 2 of 4 steps (a sharded torch.distributed.checkpoint save: each rank writes its own shards)
    and resumed, it still ends at the uninterrupted weights; the consolidated checkpoint is the served format."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from typer.testing import CliRunner

    from videoqa.cli import app

    one, one_rows = one_process
    fsdp = _torchrun(tmp_path / "fsdp", data, batch_size=2, strategy="fsdp", stop_after=2, **RUN)
    assert not (fsdp / "final").exists() and not (fsdp / "train_state.pt").exists()  # nothing gathered
    ckpt = fsdp / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in (fsdp / "checkpoints").iterdir()) == ["step-00000002"]  # no .tmp left

    # Sharding: every rank wrote its own file, each parameter's rows are split between the two files, and no file
    # holds the whole model (weights + Adam moments: each file about half of it).
    meta = FileSystemReader(str(ckpt)).read_metadata()
    files = {"__0_0.distcp", "__1_0.distcp"}
    assert {info.relative_path for info in meta.storage_data.values()} == files
    assert {"rng_rank0.pt", "rng_rank1.pt", "resume.pt"} <= {p.name for p in ckpt.iterdir()}
    up = next(k for k in meta.state_dict_metadata if k.startswith("model.") and k.endswith("0.mlp.up_proj.weight"))
    assert {meta.storage_data[i].relative_path for i in meta.storage_data if i.fqn == up} == files
    tensors = [m for m in meta.state_dict_metadata.values() if isinstance(m, TensorStorageMetadata)]
    total = sum(m.size.numel() * m.properties.dtype.itemsize for m in tensors)
    model_bytes = sum(v.numel() * v.element_size() for v in one.values())
    assert total > 2.5 * model_bytes  # the weights and both Adam moments are in the checkpoint
    sizes = [(ckpt / f).stat().st_size for f in files]
    assert max(sizes) < 0.6 * total, (sizes, total)

    fsdp = _torchrun(tmp_path / "fsdp", data, batch_size=2, strategy="fsdp", **RUN)  # resumes from step 2
    rows = [json.loads(line) for line in (fsdp / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    _same_grad_norms(rows, one_rows)  # clipping under FSDP sees the whole gradient's norm
    assert sorted(p.name for p in (fsdp / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    final = LlavaVideoForCausalLM.from_pretrained(fsdp / "final").checkpoint_state_dict()  # consolidated at the end
    assert final.keys() == one.keys()
    worst = max((final[k] - one[k]).abs().max().item() for k in final)
    assert worst < 1e-4, worst

    # The separate consolidation (one process, no torch.distributed) writes the same servable checkpoint.
    out = tmp_path / "served"
    done = CliRunner().invoke(app, ["consolidate", str(fsdp / "checkpoints" / "step-00000004"), str(out)])
    assert done.exit_code == 0, done.output
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    served = LlavaVideoForCausalLM.from_pretrained(out).checkpoint_state_dict()
    assert served.keys() == final.keys() and all(torch.equal(served[k], final[k]) for k in final)
    assert json.loads((out / "config.json").read_text())["num_frames"] == 4  # the trained frame count, as final/


def test_fsdp_with_lora_and_no_final_consolidation_equals_one_process_once_consolidated(
    tmp_path: Path, data: Path
) -> None:
    """consolidate_final: false ends the run with its sharded checkpoint alone; `videoqa consolidate` rebuilds the
    LoRA model from the run's config, reads the shards and merges the adapters: one process's weights. (The ranks'
    adapters must start alike: FSDP does not broadcast them; dropout 0, as ranks' dropout masks differ.)"""
    from typer.testing import CliRunner

    from videoqa.cli import app

    run = RUN | {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    single = train(load_config(_recipe(tmp_path / "one", data, batch_size=4, **run)))
    one = LlavaVideoForCausalLM.from_pretrained(single).checkpoint_state_dict()
    fsdp = _torchrun(tmp_path / "fsdp", data, batch_size=2, strategy="fsdp", consolidate_final=False, **run)
    assert not (fsdp / "final").exists()
    out = tmp_path / "served"
    done = CliRunner().invoke(app, ["consolidate", str(fsdp / "checkpoints" / "step-00000004"), str(out)])
    assert done.exit_code == 0, done.output
    served = LlavaVideoForCausalLM.from_pretrained(out).checkpoint_state_dict()
    assert served.keys() == one.keys()  # adapters merged: the plain served format
    worst = max((served[k] - one[k]).abs().max().item() for k in one)
    assert worst < 1e-4, worst


def test_lora_with_gradient_checkpointing_and_bf16_merges_into_a_servable_checkpoint(
    tmp_path: Path, data: Path
) -> None:
    lora = {"lora": {"r": 4, "alpha": 8}, "gradient_checkpointing": True, "bf16": True}
    final = train(load_config(_recipe(tmp_path / "a", data, **lora)))
    init = LlavaVideoForCausalLM.from_pretrained(tmp_path / "a" / "run" / "init").checkpoint_state_dict()
    tuned = LlavaVideoForCausalLM.from_pretrained(final).checkpoint_state_dict()
    assert tuned.keys() == init.keys()  # adapters merged: the plain served format
    q = next(k for k in tuned if k.endswith("layers.0.self_attn.q_proj.weight"))
    emb = next(k for k in tuned if k.endswith("embed_tokens.weight"))
    assert not torch.equal(tuned[q], init[q])  # the merged adapter changed the attention weights
    assert torch.equal(tuned[emb], init[emb])  # what LoRA does not adapt stays frozen
    losses = [json.loads(line)["loss"] for line in (tmp_path / "a" / "run" / "loss.jsonl").read_text().splitlines()]
    assert all(math.isfinite(x) for x in losses) and len(losses) == 6

    # resume with adapters: the same weights as the uninterrupted run
    interrupted = _recipe(tmp_path / "b", data, **lora)
    train(load_config(interrupted, {"stop_after": 3}))
    resumed = LlavaVideoForCausalLM.from_pretrained(train(load_config(interrupted))).checkpoint_state_dict()
    assert all(torch.equal(tuned[k], resumed[k]) for k in tuned)


def test_a_crash_between_saves_resumes_across_epochs_with_grad_accum(tmp_path: Path, data: Path) -> None:
    """8 examples, 2 per micro-batch, 2 micro-batches per step: 2 steps per epoch, so 5 steps cross two epoch
    boundaries. The run "crashes" after step 3 was logged but before it was saved (the files a crash leaves: the
    step-2 state and a loss log that already has step 3); the resumed run must redo step 3 exactly once."""
    import shutil

    subset = data / "first_8_multiple_choice.json"  # next to the records: their video paths are relative
    subset.write_text(json.dumps(json.loads((data / "procedural_v0_multiple_choice.json").read_text())[:8]))
    kw = {"batch_size": 2, "grad_accum": 2, "max_steps": 5}

    def recipe(tmp: Path) -> Path:
        path = _recipe(tmp, data, **kw)
        path.write_text(path.read_text().replace(str(data / "procedural_v0_multiple_choice.json"), str(subset)))
        return path

    straight = train(load_config(recipe(tmp_path / "a")))
    crashed = recipe(tmp_path / "b")
    run = tmp_path / "b" / "run"
    train(load_config(crashed, {"stop_after": 2}))  # end of epoch 0, saved
    shutil.copy(run / "train_state.pt", tmp_path / "state_at_2.pt")
    train(load_config(crashed, {"stop_after": 3}))  # step 3 logged (and saved, which the crash undoes:)
    shutil.copy(tmp_path / "state_at_2.pt", run / "train_state.pt")
    with (run / "loss.jsonl").open("a") as log:
        log.write('{"step": 4, "loss": 1.0')  # and a row the crash cut off mid-write
    resumed = train(load_config(crashed))

    steps = [json.loads(line)["step"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    a = LlavaVideoForCausalLM.from_pretrained(straight).checkpoint_state_dict()
    b = LlavaVideoForCausalLM.from_pretrained(resumed).checkpoint_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # same data order and accumulation across the epoch boundaries
    straight_losses = [
        json.loads(line)["loss"] for line in (tmp_path / "a" / "run" / "loss.jsonl").read_text().splitlines()
    ]
    assert [json.loads(line)["loss"] for line in (run / "loss.jsonl").read_text().splitlines()] == straight_losses
