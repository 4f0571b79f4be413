"""LLaVA-Video in plain torch/transformers: the reference that training trains and parity tests compare
vLLM against.

Parent: LLaVA-NeXT's LlavaQwenForCausalLM (llava/model/language_model/llava_qwen.py + llava_arch.py).
Differences from the parent, kept visible:
* Videos only (no anyres image path); the video token layout comes from `layout.py`/`packing.py`, where
  SlowFast is implemented as the paper describes (the parent's `add_faster_video` branch never ran).
* A `<video>` placeholder token expanded to `num_video_tokens` copies (like vLLM) instead of the parent's
  IMAGE_TOKEN_INDEX=-200 splice; the embeddings that land in the sequence are the same.
* The SigLIP tower is stored already truncated (last layer and head dropped; no post-layernorm), which is
  what siglip_encoder.py computes by deleting the last layer and reading hidden_states[-1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Qwen2ForCausalLM, SiglipVisionModel
from transformers.activations import ACT2FN

from videoqa.model.config import WEIGHT_PREFIXES, LlavaVideoConfig
from videoqa.model.layout import num_video_tokens
from videoqa.model.packing import pack_video

# Our checkpoint keys <-> this module's parameter names. transformers 5's SiglipVisionModel has no
# "vision_model." level, so the file's "vision_tower.vision_model." maps to the module's "vision_tower.".
_FILE_TO_MODULE = [(WEIGHT_PREFIXES["vision"], "vision_tower.")]
WEIGHTS_NAME = "model.safetensors"


class LlavaVideoProjector(nn.Module):
    """mlp2x_gelu: Linear(vision -> H), GELU, Linear(H -> H) (llava/model/multimodal_projector/builder.py)."""

    def __init__(self, vision_hidden: int, text_hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)
        self.act = ACT2FN[act]
        # Any module H -> H: the ladder experiments append a norm (videoqa.training.experiments.ladder).
        self.linear_2: nn.Module = nn.Linear(text_hidden, text_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaVideoForCausalLM(nn.Module):
    def __init__(self, config: LlavaVideoConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.text.hidden_size
        self.vision_tower = SiglipVisionModel(config.vision)
        # The parent drops the head and reads the encoder output before post_layernorm. (transformers types
        # these slots as the modules it puts there; any nn.Module may replace them.)
        self.vision_tower.post_layernorm = nn.Identity()  # type: ignore[assignment]
        self.vision_tower.head = nn.Identity()  # type: ignore[assignment]
        self.multi_modal_projector = LlavaVideoProjector(config.vision.hidden_size, hidden, config.projector_hidden_act)
        # llava_arch.py initialises image_newline as randn(H) / sqrt(H).
        self.image_newline = nn.Parameter(torch.randn(hidden) / hidden**0.5)
        self.frame_token = nn.Parameter(torch.randn(hidden) / hidden**0.5) if config.layout.frame_token else None
        self.language_model = Qwen2ForCausalLM(config.text)
        if config.tie_word_embeddings:
            self.language_model.lm_head.weight = self.language_model.model.embed_tokens.weight

    # ---- vision -------------------------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [F, 3, S, S] -> projected per-frame features [F, g*g, H]."""
        # Any: SiglipVisionTransformer, or where a transformers version has no wrapper the model itself.
        tower: Any = self.vision_tower.vision_model if hasattr(self.vision_tower, "vision_model") else self.vision_tower
        x = tower.embeddings(pixel_values.to(self.dtype))  # [F, g*g, Dv]
        x = tower.encoder(inputs_embeds=x).last_hidden_state  # [F, g*g, Dv], kept layers only
        return self.multi_modal_projector(x)  # [F, g*g, H]

    def embed_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [F, 3, S, S] -> the video's embedding sequence [N, H] (N from layout.py)."""
        feats = self.encode_frames(pixel_values)  # [F, g*g, H]
        return pack_video(feats, self.config.layout, self.config.grid, self.image_newline, self.frame_token)

    def num_video_tokens(self, num_frames: int) -> int:
        return num_video_tokens(self.config.layout, num_frames, self.config.grid)

    # ---- language -----------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.image_newline.dtype

    def build_inputs_embeds(
        self, input_ids: torch.Tensor, videos: list[list[torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """input_ids [B, L] with expanded <video> runs -> inputs_embeds [B, L, H].

        videos[b] holds row b's videos (pixel values [F, 3, S, S]) in prompt order; their packed embeddings
        replace that row's placeholder positions, in order.
        """
        embeds = self.language_model.get_input_embeddings()(input_ids)  # [B, L, H]
        # Not in place on the embedding output itself: with a frozen embedding and gradient checkpointing it is a
        # leaf that requires grad (peft/transformers hook), which autograd forbids writing into.
        embeds = embeds.clone()
        video_id = self.config.video_token_id
        for b in range(input_ids.shape[0]):
            row_videos = videos[b] if videos is not None and b < len(videos) else []
            positions = (input_ids[b] == video_id).nonzero(as_tuple=True)[0]
            if not row_videos:
                if positions.numel():
                    raise ValueError(f"row {b} has {positions.numel()} <video> tokens but no video")
                continue
            packed = torch.cat([self.embed_video(v) for v in row_videos], dim=0)  # [N_total, H]
            if packed.shape[0] != positions.numel():
                raise ValueError(
                    f"row {b}: {positions.numel()} <video> placeholder tokens but the videos pack to "
                    f"{packed.shape[0]} embeddings; expand placeholders with prompt.expand_video_placeholders"
                )
            embeds[b, positions] = packed.to(embeds.dtype)
        return embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        videos: list[list[torch.Tensor]] | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (logits [B, L, V], shifted cross-entropy loss over labels != -100, or None)."""
        embeds = self.build_inputs_embeds(input_ids, videos)
        out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        logits = out.logits  # [B, L, V]
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # [B*(L-1), V]
            shift_labels = labels[:, 1:].reshape(-1)  # [B*(L-1)]
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def first_step_logits(self, input_ids: torch.Tensor, videos: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of the next token after a single prompt [L] -> [V] (float32)."""
        logits, _ = self.forward(input_ids[None], videos=[videos or []])
        return logits[0, -1].float()

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        videos: list[torch.Tensor] | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | None = None,
    ) -> list[int]:
        """Exact greedy decoding for one prompt [L]; returns the new token ids (stops after eos)."""
        embeds = self.build_inputs_embeds(input_ids[None], [videos or []])  # [1, L, H]
        out = self.language_model(inputs_embeds=embeds, use_cache=True)
        past = out.past_key_values
        new: list[int] = []
        next_id = int(out.logits[0, -1].argmax())
        for _ in range(max_new_tokens):
            new.append(next_id)
            if eos_token_id is not None and next_id == eos_token_id:
                break
            step = self.language_model.get_input_embeddings()(torch.tensor([[next_id]]))  # [1, 1, H]
            out = self.language_model(inputs_embeds=step, past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_id = int(out.logits[0, -1].argmax())
        return new

    # ---- checkpoint format --------------------------------------------------------------------------
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict under the checkpoint's key names (docs/architecture.md)."""
        out: dict[str, torch.Tensor] = {}
        for name, tensor in self.state_dict().items():
            if name.startswith(("vision_tower.post_layernorm", "vision_tower.head")):
                continue
            if self.config.tie_word_embeddings and name == "language_model.lm_head.weight":
                continue
            for file_prefix, module_prefix in _FILE_TO_MODULE:
                if name.startswith(module_prefix):
                    name = file_prefix + name[len(module_prefix) :]
                    break
            out[name] = tensor.detach().contiguous().clone()
        return out

    def load_checkpoint_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        mapped: dict[str, torch.Tensor] = {}
        for name, tensor in weights.items():
            for file_prefix, module_prefix in _FILE_TO_MODULE:
                if name.startswith(file_prefix):
                    name = module_prefix + name[len(file_prefix) :]
                    break
            mapped[name] = tensor
        if self.config.tie_word_embeddings:
            mapped["language_model.lm_head.weight"] = mapped["language_model.model.embed_tokens.weight"]
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}")

    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        weights = self.checkpoint_state_dict()
        if dtype is not None:
            weights = {k: v.to(dtype) for k, v in weights.items()}
        self.config.dtype = str(dtype or self.dtype).removeprefix("torch.")
        self.config.architectures = ["LlavaVideoForCausalLM"]
        self.config.save_pretrained(out)
        save_file(weights, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        return out

    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path, dtype: torch.dtype = torch.float32) -> LlavaVideoForCausalLM:
        ckpt = Path(ckpt_dir)
        if not (ckpt / "config.json").is_file():
            raise FileNotFoundError(f"{ckpt} is not a checkpoint directory (no config.json)")
        model_type = json.loads((ckpt / "config.json").read_text()).get("model_type")
        if model_type != "llava_video":
            raise ValueError(
                f"{ckpt} has model_type {model_type!r}; convert it first with `videoqa model convert {ckpt} OUT`"
            )
        config = LlavaVideoConfig.from_pretrained(ckpt)
        config.vision._attn_implementation = "sdpa"
        config.text._attn_implementation = "sdpa"
        model = cls(config)
        weights: dict[str, torch.Tensor] = {}
        for shard in sorted(ckpt.glob("*.safetensors")):  # one file, or the converter's shards
            weights.update(load_file(str(shard)))
        model.load_checkpoint_state_dict(weights)
        return model.to(dtype).eval()
