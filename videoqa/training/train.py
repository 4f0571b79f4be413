"""`videoqa train CONFIG.yaml`: fine-tune a LLaVA-Video checkpoint on 178K-format data (nanoGPT-style recipe).

Recipe (paper / scripts/video/train/SO400M_Qwen2_7B_ov_to_video_am9.sh): everything trainable, lr 1e-5 for the
LLM and projector, 2e-6 for the vision tower, cosine schedule with 3% warmup, no weight decay, loss on the
assistant's tokens only, the checkpoint's own video layout (SlowFast included) and the time instruction.
Multi-process: `torchrun --standalone --nproc_per_node N -m videoqa.training.train CONFIG.yaml` (DDP; gloo on CPU,
nccl on GPU; tested with 2 gloo processes), or FSDP2 with `strategy: fsdp` (tested the same way). Data streams
from DataLoader workers (videoqa.training.stream); each process takes its slice of every global batch, gradients
are reduced once per optimizer step, and the loss is the mean over every labelled token of the step, so N
processes x batch B train like one process x batch N*B.
Resumable: a run restarted with the same config continues from its last checkpoint (data position and RNG
included) to the same weights. Under FSDP a checkpoint is sharded (torch.distributed.checkpoint: each rank writes
its own shards, RUN_DIR/checkpoints/step-N/), and `videoqa consolidate` turns one into the served format.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm
from transformers import AutoTokenizer

from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.training.config import TrainConfig, load_config
from videoqa.training.data import IGNORE, load_records
from videoqa.training.stream import (
    Batch,
    Collator,
    FrameCache,
    GroupedBatchSampler,
    VideoQADataset,
    estimate_lengths,
    make_loader,
)
from videoqa.training.tracking import WandbRun, require_wandb
from videoqa.video import SamplingSpec

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import Qwen2ForCausalLM

STATE = "train_state.pt"
SHARDED = "checkpoints"  # RUN_DIR/checkpoints/step-00000042/: one sharded (DCP) checkpoint per saved step
RESUME = "resume.pt"  # in a sharded checkpoint: step, schedule, data position (rank 0's)


def _setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    return (dist.get_rank() if world > 1 else 0), world


def _load_model(cfg: TrainConfig, out: Path) -> tuple[LlavaVideoForCausalLM, Path]:
    if cfg.model == "tiny":
        from videoqa.model.tiny import TinySpec, init_tiny

        src = out / "init"
        if not (src / "config.json").exists():
            overrides: dict[str, Any] = dict(cfg.tiny)  # TinySpec fields by name (ints, floats, bools)
            init_tiny(src, seed=cfg.seed, spec=TinySpec(**overrides))
    else:
        src = Path(cfg.model)
    return LlavaVideoForCausalLM.from_pretrained(src), src


def _build_model(cfg: TrainConfig, out: Path, checkpointing: bool) -> tuple[LlavaVideoForCausalLM, Path]:
    """The model as trained: loaded, with gradient checkpointing if asked, then LoRA adapters (in that order:
    peft hooks the embedding's output for checkpointing when it wraps a model that has it on)."""
    model, src = _load_model(cfg, out)
    if checkpointing:
        model.vision_tower.gradient_checkpointing_enable()
        model.language_model.gradient_checkpointing_enable()
    if cfg.lora is not None:
        # The adapters' random init from the seed alone: rank 0 alone built the tiny checkpoint (drawing from the
        # RNG), and FSDP shards each rank's own copy without a broadcast, so ranks must init identically.
        torch.manual_seed(cfg.seed)
        model.language_model = _with_lora(model.language_model, cfg)
    return model, src


def _param_groups(model: LlavaVideoForCausalLM, cfg: TrainConfig) -> list[dict]:
    """Separate learning rates for tower, projector (+ newline/frame token) and LLM, as the paper trains."""
    tower: list[torch.nn.Parameter] = []
    projector: list[torch.nn.Parameter] = []
    llm: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if name.startswith("language_model.") and not p.requires_grad:
            continue  # frozen by LoRA
        (
            tower if name.startswith("vision_tower.") else llm if name.startswith("language_model.") else projector
        ).append(p)
    groups = [{"params": projector, "lr": cfg.lr_projector or cfg.lr, "name": "projector"}]
    if cfg.lr_vision > 0:
        groups.append({"params": tower, "lr": cfg.lr_vision, "name": "vision"})
    else:
        for p in tower:
            p.requires_grad_(False)
    if not cfg.freeze_llm:
        groups.append({"params": llm, "lr": cfg.lr, "name": "llm"})
    else:
        for p in llm:
            p.requires_grad_(False)
    for g in groups:
        g["initial_lr"] = g["lr"]
    return groups


class _Tracker:
    """loss.jsonl (always) and TensorBoard event files (rank 0; when `tensorboard` is on and installed); the
    scalars also go to the W&B run when the recipe has one (started here on rank 0, ended by `train`)."""

    def __init__(self, out: Path, enabled: bool, cfg: TrainConfig, remote: WandbRun) -> None:
        self.enabled = enabled
        self.remote = remote
        if enabled:
            remote.start(cfg, out)
        tensorboard = cfg.tensorboard
        self.log = (out / "loss.jsonl").open("a") if enabled else None
        self.val = (out / "val_loss.jsonl").open("a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the `train` extra brings it; training works without it
                print("tensorboard is not installed (pip install 'videoqa[train]'): no event files", file=sys.stderr)
            else:
                self.tb = SummaryWriter(str(out / "tb"))

    def row(self, row: dict, val: bool = False) -> None:
        f = self.val if val else self.log
        if f is not None:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.enabled:
            self.remote.log(step, values)
        if self.tb is not None:
            for tag, value in values.items():
                self.tb.add_scalar(tag, value, step)
            self.tb.flush()

    def close(self) -> None:
        for f in (self.log, self.val):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()


def _all_sum(values: list[float], world: int) -> list[float]:
    """Sum across ranks (float64 on CPU: gloo and nccl both take it through the default group's device)."""
    t = torch.tensor(values, dtype=torch.float64)
    if world > 1:
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
    return t.cpu().tolist()


def _token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the next-token predictions over labelled (assistant) tokens."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def _labelled(batch: Batch) -> int:
    return int((batch.labels[:, 1:] != IGNORE).sum())


def _sync_gradients(ddp: torch.nn.Module, sharded: bool, sync: bool) -> contextlib.AbstractContextManager:
    """Reduce gradients across ranks only on the last micro-batch of a step (DDP `no_sync`; FSDP2
    `set_requires_gradient_sync`, which keeps the unsharded gradients local until then)."""
    if sharded:
        from torch.distributed.fsdp import FSDPModule

        assert isinstance(ddp, FSDPModule)  # fully_shard made the model one
        ddp.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if isinstance(ddp, torch.nn.parallel.DistributedDataParallel) and not sync:
        return ddp.no_sync()
    return contextlib.nullcontext()


def _count_syncs(ddp: torch.nn.parallel.DistributedDataParallel, state: dict) -> None:
    """DDP comm hook that records in which micro-batch gradients were all-reduced (logged as grad_syncs), then
    does what DDP does by default (allreduce, divided by the world size)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def hook(st, bucket):  # unannotated: DDP checks annotations, which `from __future__` turns into strings
        st["synced"].add(st["micro"])
        return allreduce_hook(None, bucket)

    ddp.register_comm_hook(state, hook)


def _rng_state() -> dict:
    state = {
        "rng_python": random.getstate(),
        "rng_numpy": np.random.get_state(),
        "rng_torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["rng_python"])
    np.random.set_state(state["rng_numpy"])
    torch.set_rng_state(state["rng_torch"])
    if "rng_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])


def _dataset(cfg: TrainConfig, data: str, mcfg, tokenizer, spec: SamplingSpec, cache) -> VideoQADataset:
    records, root = load_records(data, cfg.seed)
    if not records:
        raise ValueError(f"{data} holds no records")
    return VideoQADataset(
        records,
        Path(cfg.video_root) if cfg.video_root else root,
        spec,
        tokenizer,
        mcfg.layout,
        mcfg.grid,
        mcfg.video_token_id,
        mcfg.image_size,
        cfg.max_length,
        cache,
    )


def train(cfg: TrainConfig) -> Path:
    """Train as the recipe says; returns OUTPUT_DIR/final (or the resumable state when `stop_after` ended it)."""
    require_wandb(cfg)  # before anything is loaded: a recipe asking for W&B without wandb installed
    remote = WandbRun(cfg.wandb)
    try:
        result = _train(cfg, remote)
    except BaseException:  # a crash or an interrupt: the W&B run ends as failed, not as finished or left running
        remote.finish(failed=True)
        raise
    out = Path(cfg.output_dir)
    remote.finish(failed=False, artefacts=[out / "loss.png", out / "config.yaml"])
    return result


def _train(cfg: TrainConfig, remote: WandbRun) -> Path:
    t_start = time.perf_counter()
    rank, world = _setup_distributed()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 first writes the initial checkpoint; the others then read it
    model, src = _build_model(cfg, out, cfg.gradient_checkpointing)
    tokenizer = AutoTokenizer.from_pretrained(src)
    if world > 1 and rank == 0:
        dist.barrier()
    if rank == 0:  # the resolved recipe (defaults included) next to what it produced
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    mcfg = model.config
    device = torch.device(
        cfg.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    )
    model.to(device)

    # Data: records only; frames are decoded per batch in the DataLoader's workers (videoqa.training.stream).
    spec = SamplingSpec(
        num_frames=cfg.num_frames,
        fps=cfg.fps,
        max_frames=cfg.num_frames,
        policy=cfg.policy,
        size=(mcfg.image_size, mcfg.image_size),
    )
    cache = FrameCache(cfg.frame_cache, spec, int(cfg.frame_cache_gib * 2**30)) if cfg.frame_cache else None
    dataset = _dataset(cfg, cfg.data, mcfg, tokenizer, spec, cache)
    lengths = estimate_lengths(dataset.records, mcfg.layout, mcfg.grid, cfg.num_frames)
    sampler = GroupedBatchSampler(lengths, cfg.batch_size, world, rank, cfg.seed, cfg.group_by_length)
    collator = Collator(tokenizer.pad_token_id, mcfg.video_token_id)

    per_step = cfg.batch_size * cfg.grad_accum * world
    total = cfg.max_steps or max(int(len(sampler) * cfg.epochs) // cfg.grad_accum, 1)
    warmup = int(total * cfg.warmup_ratio)
    sharded = world > 1 and cfg.strategy == "fsdp"
    if sharded:
        _shard(model)  # before the optimizer: it must hold the sharded parameters
    optim = torch.optim.AdamW(_param_groups(model, cfg), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda s: (
            (s + 1) / max(warmup, 1)
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1)))
        ),
    )
    step, micro, skipped_total = 0, 0, 0
    state_path = out / STATE
    latest = _latest_sharded(out) if sharded else None
    if latest is not None or state_path.exists():  # exact resume: weights, optimizer, schedule, RNG, data position
        if latest is not None:
            state_path = latest
            state = _load_sharded(model, optim, latest, rank)
        else:  # a full state: DDP, one process, or an FSDP run saved before checkpoints were sharded
            state = torch.load(state_path, weights_only=False)
            _load_states(model, optim, state["model"], state["optim"], sharded)
        sched.load_state_dict(state["sched"])
        step = state["step"]
        _set_rng_state(state)
        data = state.get("data", {"micro_batch": step * cfg.grad_accum, "global_batch": sampler.global_batch})
        if data["global_batch"] != sampler.global_batch:
            raise ValueError(
                f"{state_path} was written with {data['global_batch']} examples per micro-batch over all ranks; "
                f"this run has {sampler.global_batch} (batch_size x processes): the data order would differ"
            )
        micro, skipped_total = data["micro_batch"], data.get("skipped", 0)
    # find_unused_parameters: a layout may leave a learned token unused (e.g. no newline), which DDP must allow.
    ddp = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
        if world > 1 and not sharded
        else model
    )
    syncs: dict = {"micro": 0, "synced": set()}
    if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
        _count_syncs(ddp, syncs)
    model.train()

    def stream(first: int) -> Generator[Batch, None, None]:
        """Micro-batches from global index `first` on, across epochs (epoch e's order from seed and e alone)."""
        m = first
        while True:
            epoch, within = divmod(m, len(sampler))
            sampler.set_epoch(epoch, within)
            for batch in make_loader(dataset, sampler, collator, cfg.num_workers, cfg.prefetch_batches):
                yield batch
                m += 1

    val_loader = None
    if cfg.val_data and cfg.val_every:
        val_set = _dataset(cfg, cfg.val_data, mcfg, tokenizer, spec, cache)
        val_set.records = val_set.records[: cfg.val_examples]
        val_sampler = GroupedBatchSampler(
            [0] * len(val_set.records), cfg.batch_size, world, rank, group_by_length=False
        )
        val_loader = make_loader(val_set, val_sampler, collator, cfg.num_workers, cfg.prefetch_batches)

    def validate() -> float:
        assert val_loader is not None  # called only when there is validation data
        ddp.eval()
        loss_sum, tokens = 0.0, 0.0
        with torch.no_grad():
            for batch in val_loader:
                batch = batch.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits, _ = ddp(batch.input_ids, attention_mask=batch.attention_mask, videos=batch.videos)
                loss_sum += _token_loss_sum(logits, batch.labels).item()
                tokens += _labelled(batch)
        ddp.train()
        loss_sum, tokens = _all_sum([loss_sum, tokens], world)
        return loss_sum / max(tokens, 1)

    if rank == 0:  # rows past the step resumed from were logged before a crash; they are redone now
        for log_name in ("loss.jsonl", "val_loss.jsonl", "skipped.jsonl"):
            _truncate_log(out / log_name, step)
    track = _Tracker(out, rank == 0, cfg, remote)
    skipped_log = (out / "skipped.jsonl").open("a")  # every rank appends its own (short lines: atomic appends)
    batches = stream(micro)
    bar = tqdm(total=total, initial=step, desc="training", disable=rank != 0)
    first_step = True
    saved = state_path  # the latest checkpoint (a sharded save replaces it with its own directory)
    try:
        while step < total:
            t0 = time.perf_counter()
            micro_batches = [next(batches) for _ in range(cfg.grad_accum)]
            t_data = time.perf_counter() - t0
            # The loss is the mean over every labelled token of the step (all micro-batches, all ranks), so N
            # processes x batch B equal one process x batch N*B; DDP/FSDP average gradients over ranks, hence
            # the factor `world`.
            tokens = max(_all_sum([sum(_labelled(b) for b in micro_batches)], world)[0], 1)
            optim.zero_grad(set_to_none=True)
            loss_sum = 0.0
            syncs["synced"].clear()
            for a, batch in enumerate(micro_batches):
                batch = batch.to(device)
                syncs["micro"] = a
                with _sync_gradients(ddp, sharded, a == cfg.grad_accum - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                        logits, _ = ddp(batch.input_ids, attention_mask=batch.attention_mask, videos=batch.videos)
                    loss = _token_loss_sum(logits, batch.labels)
                    (loss * world / tokens).backward()
                loss_sum += loss.item()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor; every rank takes part in materialising it
                norm = norm.full_tensor()
            grad_norm = float(norm)
            optim.step()
            sched.step()
            step += 1
            micro += cfg.grad_accum
            skipped = [s for b in micro_batches for s in b.skipped]
            for index, reason in skipped:
                skipped_log.write(json.dumps({"step": step, "rank": rank, "record": index, "reason": reason}) + "\n")
            skipped_log.flush()
            visual: float = sum(b.visual_tokens for b in micro_batches)
            loss_sum, n_skipped, visual = _all_sum([loss_sum, len(skipped), visual], world)
            skipped_total += int(n_skipped)
            step_s = time.perf_counter() - t0
            bar.update(1)
            if rank == 0:
                if first_step:
                    track.scalars(step, {"time/to_first_step_s": time.perf_counter() - t_start})
                    first_step = False
                lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(optim.param_groups)}
                scalars = {
                    "train/loss": loss_sum / tokens,
                    "train/grad_norm": grad_norm,
                    "throughput/samples_per_s": per_step / step_s,
                    "throughput/visual_tokens_per_s": visual / step_s,
                    "time/step_s": step_s,
                    "time/data_wait_s": t_data,
                    "data/skipped": skipped_total,
                    **{f"lr/{name}": lr for name, lr in lrs.items()},
                }
                if torch.cuda.is_available():
                    scalars["memory/gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                track.scalars(step, scalars)
                if step % cfg.log_every == 0:
                    row: dict[str, Any] = {"step": step, "loss": loss_sum / tokens, "lr": sched.get_last_lr()[-1]}
                    row |= {"examples": per_step, "lrs": lrs, "samples_per_s": per_step / step_s}
                    row |= {"visual_tokens_per_s": visual / step_s, "skipped": skipped_total}
                    row["grad_norm"] = grad_norm  # before clipping, over all ranks' gradients
                    row["elapsed_s"] = time.perf_counter() - t_start  # at step 1 (this launch): time to first step
                    if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
                        row["grad_syncs"] = len(syncs["synced"])  # micro-batches whose gradients were reduced
                    track.row(row)
                    bar.set_postfix(loss=f"{loss_sum / tokens:.3f}")
            if val_loader is not None and step % cfg.val_every == 0:
                val = validate()
                if rank == 0:
                    track.scalars(step, {"val/loss": val})
                    track.row({"step": step, "val_loss": val}, val=True)
            stopping = cfg.stop_after is not None and step >= cfg.stop_after and step < total
            if (cfg.save_every and step % cfg.save_every == 0) or step == total or stopping:
                data = {"micro_batch": micro, "global_batch": sampler.global_batch, "skipped": skipped_total}
                if sharded:  # every rank writes its own shards; nothing is gathered
                    saved = _save_sharded(model, optim, sched, step, data, out, rank)
                elif rank == 0:  # DDP (every rank holds the same full state) or one process
                    _save_state(model.state_dict(), optim.state_dict(), sched, step, data, out / STATE)
            if stopping:
                return saved
    finally:
        bar.close()
        track.close()
        skipped_log.close()
        batches.close()  # ends the DataLoader's worker processes
    final = out / "final"
    if rank == 0:
        if not sharded:
            _save_servable(model, tokenizer, cfg, final)
        elif cfg.consolidate_final:  # from the sharded checkpoint just written, as `videoqa consolidate` does
            _consolidate(cfg, out, saved, final)
        else:
            print(f"sharded checkpoint {saved}; servable copy: videoqa consolidate {saved} OUT_DIR", file=sys.stderr)
        plot_loss(out / "loss.jsonl", out / "loss.png")
    if sharded and not cfg.consolidate_final:
        final = saved
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the loss rows up to the step being resumed from: a run that crashed between two saves had logged
    steps past its last save, and redoing them would log them twice."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    # A row cut off mid-write by the crash (no newline) is dropped too.
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)


def _with_lora(language_model: torch.nn.Module, cfg: TrainConfig) -> Qwen2ForCausalLM:
    """The LM with LoRA adapters: a PeftModel, typed as the Qwen2 model it wraps and stands in for (it forwards
    every other attribute to it; the model's forward calls it the same way)."""
    from peft import LoraConfig, get_peft_model

    assert cfg.lora is not None
    settings = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules
    )
    return cast("Qwen2ForCausalLM", get_peft_model(language_model, settings))


def _shard(model: LlavaVideoForCausalLM) -> None:
    """FSDP2: each SigLIP encoder layer and Qwen2 decoder layer is its own shard unit, the rest the root's."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if type(module).__name__ in ("Qwen2DecoderLayer", "SiglipEncoderLayer"):
            fully_shard(module)
    fully_shard(model)


def _load_states(model, optim, weights: dict, optim_state: dict, sharded: bool) -> None:
    """A full state into the model (FSDP: every rank takes its shards of it; a train_state.pt an FSDP run wrote
    before checkpoints were sharded)."""
    if not sharded:
        model.load_state_dict(weights)
        optim.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optim,
        model_state_dict=weights,
        optim_state_dict=optim_state,
        options=StateDictOptions(full_state_dict=True),
    )


def _save_state(weights: dict, optim_state: dict, sched, step: int, data: dict, path: Path) -> None:
    """Everything an exact resume needs: weights, optimizer, schedule, step, RNG (CPU, CUDA, numpy, python) and
    the data position (micro-batches consumed; the order itself follows from seed and epoch)."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": weights, "optim": optim_state, "sched": sched.state_dict(), "step": step, "data": data}
        | _rng_state(),
        tmp,
    )
    tmp.replace(path)


def _save_servable(model: LlavaVideoForCausalLM, tokenizer, cfg: TrainConfig, final: Path) -> None:
    """The served format (config + safetensors + tokenizer): what the end of a run and `videoqa consolidate`
    write."""
    model.eval()
    if cfg.lora is not None:  # the served format has no adapters: fold them into the weights
        lora_lm = cast("PeftModel", model.language_model)  # what _with_lora put there
        model.language_model = cast("Qwen2ForCausalLM", lora_lm.merge_and_unload())
    model.to("cpu")
    if cfg.fps is None:  # served with the frame count it learned on, unless a request says otherwise
        model.config.num_frames = cfg.num_frames
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)


def _sharded_dir(out: Path, step: int) -> Path:
    return out / SHARDED / f"step-{step:08d}"


def _latest_sharded(out: Path) -> Path | None:
    """The newest complete sharded checkpoint: a save is written under step-N.tmp and renamed to step-N only
    after every rank has finished, so a step-N directory is whole."""
    done = sorted(p for p in (out / SHARDED).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def _save_sharded(model, optim, sched, step: int, data: dict, out: Path, rank: int) -> Path:
    """A torch.distributed.checkpoint save: each rank writes the shards it holds of the weights and of the
    optimizer state (`__RANK_0.distcp`; rank 0 also the `.metadata` index), its own RNG state (`rng_rankR.pt`:
    ranks differ, e.g. dropout masks), and rank 0 the schedule, step and data position (`resume.pt`).
    Written to step-N.tmp and renamed when every rank is done: a crash mid-save leaves the previous checkpoint
    the latest. The output directory must be one file system for all ranks (as for the full save)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    target = _sharded_dir(out, step)
    tmp = target.with_name(target.name + ".tmp")
    if rank == 0 and tmp.exists():  # what a save that crashed left
        shutil.rmtree(tmp)
    dist.barrier()
    weights, optim_state = get_state_dict(model, optim)  # this rank's shards (DTensors), no gather
    dcp.save({"model": weights, "optim": optim_state}, checkpoint_id=tmp)  # ends with a barrier of its own
    torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        torch.save({"sched": sched.state_dict(), "step": step, "data": data}, tmp / RESUME)
    dist.barrier()  # every rank's files are in tmp
    if rank == 0:
        if target.exists():  # the same step saved by an earlier launch
            shutil.rmtree(target)
        tmp.rename(target)
    dist.barrier()  # no rank goes on (or resumes) before the checkpoint is complete
    return target


def _load_sharded(model, optim, checkpoint: Path, rank: int) -> dict:
    """Each rank reads its shards of a sharded checkpoint into the (sharded) model and optimizer; returns the
    resume state with this rank's RNG."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    weights, optim_state = get_state_dict(model, optim)
    dcp.load({"model": weights, "optim": optim_state}, checkpoint_id=checkpoint)  # in place, into these dicts
    set_state_dict(model, optim, model_state_dict=weights, optim_state_dict=optim_state)
    resume = torch.load(checkpoint / RESUME, weights_only=False)
    rng = checkpoint / f"rng_rank{rank}.pt"
    if not rng.exists():  # resumed on more ranks than saved: the data order is the same, the RNG stream is not
        print(f"{rng} missing: rank {rank} resumes with rank 0's RNG state", file=sys.stderr)
        rng = checkpoint / "rng_rank0.pt"
    return resume | torch.load(rng, weights_only=False)


def _consolidate(cfg: TrainConfig, out: Path, checkpoint: Path, final: Path) -> Path:
    """A sharded checkpoint into the served format, in this process alone (no process group needed): the model
    rebuilt as trained (LoRA included), every shard read into its full CPU state dict, then saved as the end of
    a run saves."""
    import torch.distributed.checkpoint as dcp

    model, src = _build_model(cfg, out, checkpointing=False)
    weights = model.state_dict()
    # no_dist: read all shards here, whether or not a process group exists (rank 0 at the end of a run); DCP
    # warns that it assumes exactly that.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": weights}, checkpoint_id=checkpoint, no_dist=True)
    model.load_state_dict(weights)
    _save_servable(model, AutoTokenizer.from_pretrained(src), cfg, final)
    return final


def consolidate(checkpoint: Path, final: Path) -> Path:
    """`videoqa consolidate RUN_DIR/checkpoints/step-N OUT_DIR`: the run's resolved recipe (RUN_DIR/config.yaml)
    says how to rebuild the model; OUT_DIR gets the servable checkpoint."""
    if not (checkpoint / ".metadata").is_file():
        raise ValueError(f"{checkpoint} is not a sharded checkpoint (no .metadata)")
    run = checkpoint.parent.parent
    cfg = load_config(run / "config.yaml", {"output_dir": str(run)})
    return _consolidate(cfg, run, checkpoint, final)


def plot_loss(log: Path, png: Path) -> None:
    """The training loss, and the validation loss when the run has one (val_loss.jsonl beside the log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    fig, ax = plt.subplots(figsize=(6, 3.5))
    train_rows, val_rows = rows(log), rows(log.with_name("val_loss.jsonl"))
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train")
    if val_rows:
        ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="validation")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    train(load_config(sys.argv[1]))
