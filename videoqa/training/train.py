"""`videoqa train CONFIG.yaml`: fine-tune a LLaVA-Video checkpoint on 178K-format data (nanoGPT-style recipe).

Recipe (paper / scripts/video/train/SO400M_Qwen2_7B_ov_to_video_am9.sh): everything trainable, lr 1e-5 for the
LLM and projector, 2e-6 for the vision tower, cosine schedule with 3% warmup, no weight decay, loss on the
assistant's tokens only, the checkpoint's own video layout (SlowFast included) and the time instruction.
Multi-process: `torchrun --standalone --nproc_per_node N -m videoqa.training.train CONFIG.yaml` (DDP; gloo on CPU,
nccl on GPU; tested with 2 gloo processes), or FSDP2 with `strategy: fsdp` (tested the same way). Each process
takes every N-th example of the epoch's permutation.
Resumable: a run restarted with the same config continues from its last checkpoint to the same weights.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import AutoTokenizer

from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.training.config import TrainConfig, load_config
from videoqa.training.data import IGNORE, FrameCache, build_example, load_records
from videoqa.video import SamplingSpec

STATE = "train_state.pt"


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
            init_tiny(src, seed=cfg.seed, spec=TinySpec(**cfg.tiny))
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
        model.language_model = _with_lora(model.language_model, cfg)
    return model, src


def _param_groups(model: LlavaVideoForCausalLM, cfg: TrainConfig) -> list[dict]:
    """Separate learning rates for tower, projector (+ newline/frame token) and LLM, as the paper trains."""
    tower, projector, llm = [], [], []
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


def _collate(batch: list, pad_id: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    longest = max(len(ids) for ids, _, _ in batch)
    input_ids = torch.full((len(batch), longest), pad_id)  # [B, L]
    labels = torch.full((len(batch), longest), IGNORE)  # [B, L]
    mask = torch.zeros((len(batch), longest), dtype=torch.long)  # [B, L]
    videos = []
    for i, (ids, lab, frames) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
        videos.append([frames_to_pixel_values(frames, image_size)])
    return input_ids, labels, mask, videos


def train(cfg: TrainConfig) -> Path:
    rank, world = _setup_distributed()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 first writes the initial checkpoint and the frame cache; the others then read them
    model, src = _build_model(cfg, out, cfg.gradient_checkpointing)
    tokenizer = AutoTokenizer.from_pretrained(src)
    mcfg = model.config
    device = torch.device(
        cfg.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    )
    model.to(device)

    # Data: each record -> (ids, labels, frames); frames decoded once into the run's frame cache.
    records, root = load_records(cfg.data, cfg.seed)
    root = Path(cfg.video_root) if cfg.video_root else root
    spec = SamplingSpec(
        num_frames=cfg.num_frames,
        fps=cfg.fps,
        max_frames=cfg.num_frames,
        policy=cfg.policy,
        size=(mcfg.image_size, mcfg.image_size),
    )
    cache = FrameCache(out / "frame_cache", spec)
    examples = []
    for rec in tqdm(records, desc="preparing data", disable=rank != 0):
        frames, duration, stamps = cache.get(root / rec["video"])
        ids, labels = build_example(
            rec, frames, duration, stamps, tokenizer, mcfg.layout, mcfg.grid, mcfg.video_token_id
        )
        if len(ids) <= cfg.max_length:
            examples.append((ids, labels, frames))
    if not examples:
        raise ValueError(f"no usable examples in {cfg.data} (all longer than max_length={cfg.max_length}?)")
    if world > 1 and rank == 0:
        dist.barrier()

    per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = max(len(examples) // per_step, 1)
    total = cfg.max_steps or max(int(steps_per_epoch * cfg.epochs), 1)
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
    step = 0
    state_path = out / STATE
    if state_path.exists():  # exact resume: weights, optimizer, schedule, RNG and data position
        state = torch.load(state_path, weights_only=False)
        _load_states(model, optim, state["model"], state["optim"], sharded)
        sched.load_state_dict(state["sched"])
        step = state["step"]
        random.setstate(state["rng_python"])
        np.random.set_state(state["rng_numpy"])
        torch.set_rng_state(state["rng_torch"])
    # find_unused_parameters: a layout may leave a learned token unused (e.g. no newline), which DDP must allow.
    ddp = (
        torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
        if world > 1 and not sharded
        else model
    )
    model.train()

    def order(epoch: int) -> list[int]:  # the same permutation for a given epoch, resumed or not
        perm = list(range(len(examples)))
        random.Random(cfg.seed * 1_000_003 + epoch).shuffle(perm)
        return perm[rank::world]

    if rank == 0:
        _truncate_log(out / "loss.jsonl", step)
    log = (out / "loss.jsonl").open("a")
    bar = tqdm(total=total, initial=step, desc="training", disable=rank != 0)
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        mine = order(epoch)
        micro = cfg.batch_size
        start = within * micro * cfg.grad_accum
        optim.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for a in range(cfg.grad_accum):
            idx = [mine[(start + a * micro + k) % len(mine)] for k in range(micro)]
            input_ids, labels, mask, videos = _collate(
                [examples[i] for i in idx], tokenizer.pad_token_id, mcfg.image_size
            )
            videos = [[v.to(device) for v in vs] for vs in videos]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                _, loss = ddp(
                    input_ids.to(device), attention_mask=mask.to(device), videos=videos, labels=labels.to(device)
                )
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        sched.step()
        step += 1
        bar.update(1)
        if rank == 0 and step % cfg.log_every == 0:
            row = {"step": step, "loss": loss_sum, "lr": sched.get_last_lr()[-1], "examples": per_step}
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{loss_sum:.3f}")
        stopping = cfg.stop_after is not None and step >= cfg.stop_after and step < total
        if (cfg.save_every and step % cfg.save_every == 0) or step == total or stopping:
            weights, optim_state = _full_states(model, optim, sharded)  # every rank takes part in the gather
            if rank == 0:
                _save_state(weights, optim_state, sched, step, state_path)
        if stopping:
            bar.close()
            log.close()
            return out / STATE
    bar.close()
    log.close()
    final = out / "final"
    if sharded:  # gather the full weights into a plain copy of the model on rank 0
        weights, _ = _full_states(model, None, True)
        if rank == 0:
            model = _build_model(cfg, out, checkpointing=False)[0]
            model.load_state_dict(weights)
    if rank == 0:
        model.eval()
        if cfg.lora is not None:  # the served format has no adapters: fold them into the weights
            model.language_model = model.language_model.merge_and_unload()
        model.to("cpu")
        if cfg.fps is None:  # served with the frame count it learned on, unless a request says otherwise
            model.config.num_frames = cfg.num_frames
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        plot_loss(out / "loss.jsonl", out / "loss.png")
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


def _with_lora(language_model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    assert cfg.lora is not None
    settings = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules
    )
    return get_peft_model(language_model, settings)


def _shard(model: LlavaVideoForCausalLM) -> None:
    """FSDP2: each SigLIP encoder layer and Qwen2 decoder layer is its own shard unit, the rest the root's."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if type(module).__name__ in ("Qwen2DecoderLayer", "SiglipEncoderLayer"):
            fully_shard(module)
    fully_shard(model)


def _full_states(model, optim, sharded: bool) -> tuple[dict, dict | None]:
    """Unsharded state dicts under module names (the same model, LoRA included, is rebuilt on resume)."""
    if not sharded:
        return model.state_dict(), (optim.state_dict() if optim is not None else None)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    return weights, (get_optimizer_state_dict(model, optim, options=options) if optim is not None else None)


def _load_states(model, optim, weights: dict, optim_state: dict, sharded: bool) -> None:
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


def _save_state(weights: dict, optim_state: dict, sched, step: int, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": weights,
            "optim": optim_state,
            "sched": sched.state_dict(),
            "step": step,
            "rng_python": random.getstate(),
            "rng_numpy": np.random.get_state(),
            "rng_torch": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(path)


def plot_loss(log: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    train(load_config(sys.argv[1]))
