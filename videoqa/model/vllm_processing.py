"""vLLM multimodal processing for LLaVA-Video checkpoints: frames in, pixel values + placeholder runs out.

No HF processor, no torchvision: frames arrive as uint8 numpy arrays [F, H, W, 3] (the gateway has already
sampled and resized them), are preprocessed by the same function the torch reference uses, and every
`<video>` token in the prompt becomes `layout.num_video_tokens(...)` copies of itself, so the engine's
placeholder count and the model's packed embeddings come from one function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from transformers import BatchFeature
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, VideoEmbeddingItems, VideoProcessorItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import max_frames_for_budget, num_video_tokens
from videoqa.model.preprocess import frames_to_pixel_values


def _as_frames(video: object) -> np.ndarray:
    """A video item as uint8 [F, H, W, 3]: accepts an array/tensor or a list of HWC frames."""
    if isinstance(video, tuple):  # (frames, metadata) from vLLM's own loaders
        video = video[0]
    if isinstance(video, torch.Tensor):
        video = video.cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"a video must be uint8 frames shaped [F, H, W, 3], got shape {arr.shape}")
    return arr


class LlavaVideoProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> LlavaVideoConfig:
        return self.ctx.get_hf_config(LlavaVideoConfig)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": None}

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {"text_kwargs": set(), "videos_kwargs": set()}  # no HF processor, no per-request knobs

    def get_num_video_tokens(self, num_frames: int) -> int:
        cfg = self.get_hf_config()
        return num_video_tokens(cfg.layout, num_frames, cfg.grid)

    def get_num_frames_with_most_features(self, seq_len: int, mm_counts: Mapping[str, int]) -> int:
        """Frames per video for profiling: the configured maximum, bounded by what fits in seq_len."""
        cfg = self.get_hf_config()
        videos = max(mm_counts.get("video", 0), 1)
        fit = max_frames_for_budget(cfg.layout, seq_len // videos, cfg.grid, limit=max(cfg.max_frames, 1))
        return max(min(cfg.max_frames, fit), 1)


class LlavaVideoDummyInputsBuilder(BaseDummyInputsBuilder[LlavaVideoProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.get_hf_config().video_token * mm_counts.get("video", 0)

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: MultiModalDummyOptions
    ) -> dict[str, object]:
        cfg = self.info.get_hf_config()
        return {
            "video": self._get_dummy_videos(
                width=cfg.image_size,
                height=cfg.image_size,
                num_frames=self.info.get_num_frames_with_most_features(seq_len, mm_counts),
                num_videos=mm_counts.get("video", 0),
                overrides=mm_options.get("video") if mm_options else None,
            )
        }


class LlavaVideoMultiModalProcessor(BaseMultiModalProcessor[LlavaVideoProcessingInfo]):
    def _maybe_apply_prompt_updates(self, mm_items: MultiModalDataItems, mm_res: Any) -> Any:
        """Refuse a prompt whose `<video>` placeholders are not exactly one per video before expanding them.

        vLLM expands one placeholder per video and would leave any extra `<video>` token in the prompt, where
        it reads as a video position; extra ones can only come from text that was tokenized with special
        tokens recognised, i.e. from a user. The chat template already refuses control tokens in message text
        (videoqa.model.tokenizer.chat_template); this holds for raw completions prompts and token-id prompts
        too.
        """
        video_token_id = self.info.get_hf_config().video_token_id
        found = list(mm_res.prompt_ids).count(video_token_id)
        videos = mm_items.get_all_counts().get("video", 0)
        if found != videos:
            raise ValueError(
                f"the prompt has {found} <video> placeholders for {videos} video(s); it needs exactly one per "
                "video (a <video> typed in text does not count: send videos as video_url parts)"
            )
        return super()._maybe_apply_prompt_updates(mm_items, mm_res)

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        cfg = self.info.get_hf_config()
        # vLLM hands the parsed video items over as a list (its Mapping is typed with object values).
        videos = [_as_frames(v) for v in cast(Iterable[object], hf_data.get("videos", []))]
        mean, std = cfg.image_mean, cfg.image_std
        assert mean is not None and std is not None  # LlavaVideoConfig.__post_init__ fills both
        pixel_values = [frames_to_pixel_values(v, cfg.image_size, mean, std) for v in videos]
        return BatchFeature({"pixel_values_videos": pixel_values}, tensor_type=None)

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {"pixel_values_videos": MultiModalFieldConfig.batched("video")}

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        video_token_id = self.info.get_hf_config().video_token_id

        def replacement(item_idx: int) -> list[int]:
            videos = mm_items.get_items("video", (VideoEmbeddingItems, VideoProcessorItems))
            if isinstance(videos, VideoEmbeddingItems):
                count = videos.get_feature_size(item_idx)
            else:
                assert isinstance(videos, VideoProcessorItems)  # get_items checked it is one of the two
                count = self.info.get_num_video_tokens(videos.get_num_frames(item_idx))
            return [video_token_id] * count

        return [PromptReplacement(modality="video", target=[video_token_id], replacement=replacement)]
