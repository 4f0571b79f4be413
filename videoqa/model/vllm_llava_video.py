"""LLaVA-Video as a vLLM model (out-of-tree plugin), built from vLLM's SigLIP and Qwen2 blocks.

Reads top to bottom like the torch reference (`llava_video.py`), which parity tests compare it against.
Differences from vLLM's in-tree LLaVA-OneVision, kept visible: pooling after the projector on the
checkpoint's layout (average 13x13 + grid newlines for LLaVA-Video, not bilinear + one newline), SlowFast,
an optional frame token, and no torchvision/HF processor (see vllm_processing.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.model_executor.models.utils import AutoWeightsLoader, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from videoqa.model.config import LlavaVideoConfig

if TYPE_CHECKING:  # the LM init_vllm_registered_model builds below (it returns a plain nn.Module)
    from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from videoqa.model.packing import pack_video
from videoqa.model.vllm_processing import (
    LlavaVideoDummyInputsBuilder,
    LlavaVideoMultiModalProcessor,
    LlavaVideoProcessingInfo,
)


class LlavaVideoProjector(nn.Module):
    """mlp2x_gelu with tensor-parallel linears (column then row, one all-reduce)."""

    def __init__(self, vision_hidden: int, text_hidden: int, act: str, prefix: str = "") -> None:
        super().__init__()
        self.linear_1 = ColumnParallelLinear(vision_hidden, text_hidden, bias=True, prefix=f"{prefix}.linear_1")
        self.act = get_act_fn(act)
        self.linear_2 = RowParallelLinear(text_hidden, text_hidden, bias=True, prefix=f"{prefix}.linear_2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.linear_1(x)
        x, _ = self.linear_2(self.act(x))
        return x


@MULTIMODAL_REGISTRY.register_processor(
    LlavaVideoMultiModalProcessor, info=LlavaVideoProcessingInfo, dummy_inputs=LlavaVideoDummyInputsBuilder
)
class LlavaVideoForCausalLM(nn.Module, SupportsMultiModal, SupportsPP):
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("video"):
            return "<video>"
        raise ValueError(f"LLaVA-Video takes videos only, got modality {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        # The checkpoint's config.json: model_type llava_video, registered by videoqa.model.config.
        config = cast(LlavaVideoConfig, vllm_config.model_config.hf_config)
        self.config = config
        self.layout = config.layout
        self.grid = config.grid
        hidden = config.text.hidden_size

        with self._mark_tower_model(vllm_config, "video"):
            # The checkpoint's tower is already truncated; read its last layer without post-layernorm.
            self.vision_tower = SiglipVisionModel(
                config.vision,
                vllm_config.quant_config,
                require_post_norm=False,
                prefix=maybe_prefix(prefix, "vision_tower"),
            )
            self.multi_modal_projector = LlavaVideoProjector(
                config.vision.hidden_size,
                hidden,
                config.projector_hidden_act,
                prefix=maybe_prefix(prefix, "multi_modal_projector"),
            )
            self.image_newline = nn.Parameter(torch.empty(hidden))
            self.frame_token = nn.Parameter(torch.empty(hidden)) if self.layout.frame_token else None

        with self._mark_language_model(vllm_config):
            self.language_model = cast(
                "Qwen2ForCausalLM",
                init_vllm_registered_model(
                    vllm_config=vllm_config,
                    hf_config=config.text,
                    prefix=maybe_prefix(prefix, "language_model"),
                    architectures=["Qwen2ForCausalLM"],
                ),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # ---- vision -------------------------------------------------------------------------------------
    def _encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [T, 3, S, S] -> projected features [T, g*g, H]."""
        feats = self.vision_tower(pixel_values.to(self.image_newline.dtype))  # [T, g*g, Dv]
        return self.multi_modal_projector(feats)  # [T, g*g, H]

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        videos = kwargs.pop("pixel_values_videos", None)
        if videos is None:
            return []
        if isinstance(videos, torch.Tensor):  # [B, F, 3, S, S] when all videos have F frames
            videos = list(videos.unbind(0))
        videos = cast(list[torch.Tensor], videos)  # else one [F_i, 3, S, S] per video (vllm_processing's fields)
        frame_counts = [v.shape[0] for v in videos]
        feats = self._encode_frames(torch.cat(list(videos), dim=0))  # [sum F, g*g, H], one tower pass
        # One 2-D tensor per video, as vLLM's V1 engine expects.
        return tuple(
            pack_video(per_video, self.layout, self.grid, self.image_newline, self.frame_token)  # [N_i, H]
            for per_video in feats.split(frame_counts, dim=0)
        )

    # ---- language -----------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # Our checkpoint's key names already match these module paths (docs/architecture.md); lm_head is
        # absent when tied, which Qwen2ForCausalLM's own loader handles.
        return AutoWeightsLoader(self).load_weights(weights)
