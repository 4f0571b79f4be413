"""Typed training config, read from a YAML recipe whose first line is its launch command."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class LoraSettings(BaseModel):
    """LoRA on the language model (peft); the tower and projector keep their own learning rates."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Qwen2 linear layers that get adapters.",
    )


class WandbSettings(BaseModel):
    """A Weights & Biases run for the training run (rank 0; the `tracking` extra installs wandb). Each setting
    left unset falls back to wandb's own environment variable (WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE, ...)."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, description="W&B project (default: WANDB_PROJECT, else 'videoqa').")
    entity: str | None = Field(default=None, description="W&B team or user (default: WANDB_ENTITY, else yours).")
    name: str | None = Field(
        default=None, description="Run name (default: WANDB_NAME, else the output_dir folder's name)."
    )
    mode: Literal["online", "offline", "disabled"] | None = Field(
        default=None,
        description="online (send as it runs), offline (write under OUTPUT_DIR/wandb, `wandb sync` later) or "
        "disabled (default: WANDB_MODE, else online).",
    )
    tags: list[str] = Field(default_factory=list, description="Run tags.")
    group: str | None = Field(default=None, description="Run group, e.g. one per sweep (default: WANDB_RUN_GROUP).")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Checkpoint dir to start from, or 'tiny' for a random tiny one (seeded).")
    data: str = Field(description="A LLaVA-Video-178K json file, or a data-mix YAML (list of json_path/strategy).")
    output_dir: str = Field(description="Where checkpoints, the loss log and the loss curve go.")
    tiny: dict[str, bool | int | float] = Field(
        default_factory=dict,
        description=(
            "TinySpec overrides when model is 'tiny' (e.g. {layers: 4, initializer_range: 0.09}); "
            "see videoqa.model.tiny.TinySpec."
        ),
    )
    video_root: str | None = Field(
        default=None, description="Base for records' relative video paths (default: the data file's folder)."
    )
    num_frames: int = Field(default=8, ge=1, description="Uniform frames per video.")
    fps: float | None = Field(default=None, gt=0, description="Sample at this rate instead (capped by num_frames).")
    policy: Literal["fast", "exact"] = Field(default="exact", description="Frame sampling policy.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the data (when max_steps is unset).")
    batch_size: int = Field(default=4, ge=1, description="Examples per step per process.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(default=1e-5, gt=0, description="LLM learning rate (paper: 1e-5).")
    lr_projector: float | None = Field(default=None, gt=0, description="Projector/newline lr (default: lr).")
    lr_vision: float = Field(default=2e-6, ge=0, description="Vision tower lr (paper: 2e-6; 0 freezes it).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay (paper: 0).")
    warmup_ratio: float = Field(default=0.03, ge=0, le=1, description="Linear warmup share of steps (paper: 0.03).")
    freeze_llm: bool = Field(default=False, description="Train only the tower/projector.")
    grad_clip: float = Field(default=1.0, gt=0, description="Gradient norm clip.")
    lora: LoraSettings | None = Field(
        default=None, description="Train LoRA adapters on the LLM instead of all its weights; merged on save."
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations (tower and LLM).")
    bf16: bool = Field(default=False, description="bfloat16 autocast for forward passes (fp32 master weights).")
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="With several processes: ddp (a full model copy each; small models) or fsdp (FSDP2: every "
        "decoder and encoder layer sharded across processes; 7B and up).",
    )
    consolidate_final: bool = Field(
        default=True,
        description="FSDP: at the end, rank 0 consolidates the last sharded checkpoint into final/ (the served "
        "format; it holds the full model in CPU memory). Off for models one host cannot hold: run `videoqa "
        "consolidate` later, where memory allows.",
    )
    device: str | None = Field(default=None, description="cuda / cpu (default: cuda:LOCAL_RANK if available).")
    save_every: int = Field(
        default=0, ge=0, description="Save a resumable checkpoint every N steps (0: only at the end)."
    )
    log_every: int = Field(default=1, ge=1, description="Log the loss every N steps.")
    stop_after: int | None = Field(
        default=None,
        ge=1,
        description="End this run after this many steps (time-boxed "
        "or preemptible jobs); running the recipe again continues to max_steps.",
    )
    seed: int = Field(default=0, description="Seed for init, data order and sampling.")
    max_length: int = Field(default=4096, ge=64, description="Examples longer than this are skipped.")
    num_workers: int = Field(
        default=2, ge=0, description="DataLoader worker processes that decode videos (0: in the training process)."
    )
    prefetch_batches: int = Field(default=2, ge=1, description="Micro-batches each worker prepares ahead.")
    group_by_length: bool = Field(
        default=True, description="Batch examples of similar length (visual + text tokens) to cut padding."
    )
    frame_cache: str | None = Field(
        default=None,
        description="Folder for decoded frames, content-addressed and shareable between ranks and runs (default: "
        "none, decode every time).",
    )
    frame_cache_gib: float = Field(default=50.0, gt=0, description="Size bound of frame_cache (LRU eviction).")
    val_data: str | None = Field(
        default=None, description="Held-out 178K json or data-mix YAML for the validation loss (video_root applies)."
    )
    val_every: int = Field(default=0, ge=0, description="Validation loss every N steps (0: never).")
    val_examples: int = Field(default=64, ge=1, description="Held-out examples per validation (the first N).")
    tensorboard: bool = Field(default=True, description="Write TensorBoard event files to OUTPUT_DIR/tb.")
    wandb: WandbSettings | None = Field(
        default=None,
        description="Also track the run in Weights & Biases (`wandb: true` or a mapping of WandbSettings; default: "
        "off): the resolved config, every TensorBoard scalar, loss.png; needs `pip install 'videoqa[tracking]'`.",
    )

    @field_validator("wandb", mode="before")
    @classmethod
    def _wandb_switch(cls, v: object) -> object:
        """`wandb: true` turns it on with every setting at its default, `wandb: false` (or null) leaves it off."""
        if v is True:
            return {}
        if v is False:
            return None
        return v

    @field_validator("tiny")
    @classmethod
    def _known_tiny_fields(cls, v: dict) -> dict:
        from dataclasses import fields

        from videoqa.model.tiny import TinySpec

        unknown = set(v) - {f.name for f in fields(TinySpec)}
        if unknown:
            raise ValueError(f"unknown TinySpec fields {sorted(unknown)}")
        TinySpec(**v)  # its own checks (head_dim, patch multiple) name the bad value
        return v

    @field_validator("model", "data", "output_dir")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a recipe; relative paths in it are relative to the working directory (where you launch)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the recipe must be a YAML mapping of settings")
    raw.update(overrides or {})
    try:
        return TrainConfig(**raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{path}: {problems}") from err
