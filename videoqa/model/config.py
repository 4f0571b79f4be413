"""The checkpoint format's config: one HF-style `config.json` with its own model_type, "llava_video".

A checkpoint directory holds:
  config.json          this config (text_config = Qwen2, vision_config = SigLIP vision, video_layout, ...)
  model.safetensors    weights under the key prefixes in `WEIGHT_PREFIXES`
  tokenizer.json, tokenizer_config.json (with the ChatML chat_template), special tokens incl. "<video>"

The SigLIP tower is stored *already truncated*: LLaVA-Video drops the tower's last encoder layer and its
head, and reads the output of the remaining layers without the post-layernorm
(LLaVA-NeXT llava/model/multimodal_encoder/siglip_encoder.py). vision_config.num_hidden_layers counts the
layers that are kept (26 for so400m).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from videoqa.model.layout import VideoLayout

if TYPE_CHECKING:
    from transformers import Qwen2Config, SiglipVisionConfig

MODEL_TYPE = "llava_video"
ARCHITECTURE = "LlavaVideoForCausalLM"

WEIGHT_PREFIXES = {
    "vision": "vision_tower.vision_model.",  # SigLIP embeddings + kept encoder layers (no post_layernorm/head)
    "projector": "multi_modal_projector.",  # linear_1 (vision -> H), GELU, linear_2 (H -> H)
    "newline": "image_newline",  # [H]
    "frame_token": "frame_token",  # [H], only when video_layout.frame_token
    "llm": "language_model.",  # Qwen2ForCausalLM: model.* and lm_head.* (absent when tied)
}


class LlavaVideoConfig(PreTrainedConfig):
    """Config of a LLaVA-Video checkpoint in this project's format."""

    model_type = MODEL_TYPE
    # AutoConfig, as transformers' own multimodal configs do; its annotation says type[PreTrainedConfig].
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}  # type: ignore[dict-item]

    vision_config: dict | PreTrainedConfig | None = None
    """SigLIP vision tower config (model_type siglip_vision_model), layers already truncated."""
    text_config: dict | PreTrainedConfig | None = None
    """Qwen2 language model config (model_type qwen2)."""
    video_layout: dict | None = None
    """`layout.VideoLayout` fields: pool_mode, pool_stride, newline, slowfast_stride, frame_token."""
    video_token: str = "<video>"
    """Placeholder token the engine expands into the video's embeddings."""
    video_token_id: int = 0
    """Its id in the tokenizer (must be below the LM's vocab_size)."""
    projector_hidden_act: str = "gelu"
    """Activation between the two projector linears (mlp2x_gelu)."""
    image_mean: list | None = None
    """Per-channel normalisation mean after rescaling to [0, 1] (SigLIP: 0.5)."""
    image_std: list | None = None
    """Per-channel normalisation std (SigLIP: 0.5)."""
    max_frames: int = 64
    """Most frames per video the engine is profiled for (the 64-frame force_sample default)."""
    num_frames: int | None = None
    """Frames per video the checkpoint was fine-tuned with (written by `videoqa train`); the gateway samples this
    many when a request does not say. None: max_frames."""
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.vision_config, dict):
            vt = self.vision_config.get("model_type", "siglip_vision_model")
            self.vision_config = CONFIG_MAPPING[vt](**self.vision_config)
        elif self.vision_config is None:
            self.vision_config = CONFIG_MAPPING["siglip_vision_model"]()
        if isinstance(self.text_config, dict):
            tt = self.text_config.get("model_type", "qwen2")
            self.text_config = CONFIG_MAPPING[tt](**self.text_config)
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["qwen2"]()
        if self.video_layout is None:
            self.video_layout = VideoLayout().to_dict()
        VideoLayout.from_dict(self.video_layout)  # validate early, naming the bad field
        if self.image_mean is None:
            self.image_mean = [0.5, 0.5, 0.5]
        if self.image_std is None:
            self.image_std = [0.5, 0.5, 0.5]
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        super().__post_init__(**kwargs)

    @property
    def vision(self) -> SiglipVisionConfig:
        """vision_config as __post_init__ leaves it: a config object (the field also takes a dict or None).
        SigLIP's: the reference model and the vLLM model build a SigLIP tower from it."""
        return cast("SiglipVisionConfig", self.vision_config)

    @property
    def text(self) -> Qwen2Config:
        """text_config as __post_init__ leaves it: a config object, Qwen2's (the LM both models build)."""
        return cast("Qwen2Config", self.text_config)

    @property
    def layout(self) -> VideoLayout:
        # None only before __post_init__, which sets the default layout's dict.
        return VideoLayout.from_dict(self.video_layout) if self.video_layout is not None else VideoLayout()

    @property
    def image_size(self) -> int:
        return _side(self.vision.image_size)

    @property
    def grid(self) -> int:
        """Patch grid side of the tower (27 for SigLIP-384 patch 14)."""
        return _side(self.vision.image_size) // _side(self.vision.patch_size)


def _side(size: int | list[int] | tuple[int, int]) -> int:
    """A SigLIP image or patch size: transformers' type also allows an (h, w) pair; the tower's are squares."""
    if not isinstance(size, int):  # int() of a pair raised TypeError before, too
        raise TypeError(f"vision_config sizes must be one int (square), got {size!r}")
    return size


def register_config() -> None:
    """Make AutoConfig know "llava_video" (safe to call more than once, in any process)."""
    with contextlib.suppress(ValueError):  # already registered
        AutoConfig.register(MODEL_TYPE, LlavaVideoConfig)


register_config()
