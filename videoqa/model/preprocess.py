"""Frames -> vision tower input. Shared by the reference model and the vLLM processor, so both see the
same pixels by construction.

SigLIP's processor (as LLaVA-Video uses it): resize to image_size x image_size (bicubic, aspect ratio not
kept, no crop), rescale by 1/255, normalise with mean = std = 0.5. The gateway's sampler already resizes in
swscale, so the resize here only runs for frames that arrive at another size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def frames_to_pixel_values(
    frames: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> torch.Tensor:
    """uint8 RGB frames [F, H, W, 3] -> float32 pixel values [F, 3, S, S]."""
    x = torch.as_tensor(np.asarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim == 3:  # a single frame
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB shaped [F, H, W, 3], got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (0..255), got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("a video needs at least one frame, got 0")
    x = x.permute(0, 3, 1, 2).to(torch.float32)  # [F, 3, H, W]
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp(0.0, 255.0).round()  # back on the uint8 grid, as a PIL resize would leave it
    x = x / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s  # [F, 3, S, S]
