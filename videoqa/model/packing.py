"""Pack per-frame projected features into the video's LLM input embeddings, following `layout.frame_plan`.

Shared by the torch reference model and the vLLM model, so both produce the same sequence by construction.
Ported semantics: LLaVA-NeXT llava/model/llava_arch.py (`get_2dPool`, `add_token_per_grid`,
`add_token_per_frame`, and the `add_faster_video` branch, which the official code leaves commented out and
which indexes frames after flattening them; here every frame keeps its own block, as the paper describes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from videoqa.model.layout import LayoutError, VideoLayout, frame_plan


def pool_frames(features: torch.Tensor, grid: int, stride: int, mode: str) -> torch.Tensor:
    """llava_arch.get_2dPool: pool every frame's grid x grid features with `stride`.

    features: [T, grid*grid, D] -> returns [T, h*h, D] with h from `layout.pooled_side`.
    """
    t, n, d = features.shape
    if n != grid * grid:
        raise LayoutError(f"expected {grid}x{grid}={grid * grid} features per frame, got {n}")
    x = features.view(t, grid, grid, d).permute(0, 3, 1, 2)  # [T, D, g, g]
    if mode == "average":
        x = F.avg_pool2d(x, stride)
    elif mode == "max":
        x = F.max_pool2d(x, stride)
    elif mode == "bilinear":
        side = -(-grid // stride)  # ceil(grid / stride), as upstream's math.ceil
        x = F.interpolate(x, size=(side, side), mode="bilinear")
    else:
        raise LayoutError(f"unknown pool_mode {mode!r}")
    x = x.permute(0, 2, 3, 1)  # [T, h, h, D]
    return x.reshape(t, -1, d)  # [T, h*h, D]


def pack_video(
    features: torch.Tensor,
    layout: VideoLayout,
    grid: int,
    image_newline: torch.Tensor,
    frame_token: torch.Tensor | None = None,
) -> torch.Tensor:
    """Turn one video's projected per-frame features into its embedding sequence.

    features: [F, grid*grid, D] (after the projector); image_newline, frame_token: [D].
    Returns [N, D] with N == layout.num_video_tokens(layout, F, grid).
    """
    num_frames, _, dim = features.shape
    plan = frame_plan(layout, num_frames, grid)
    if layout.frame_token and frame_token is None:
        raise LayoutError("layout.frame_token is set but the model has no frame_token embedding")

    slow_idx = [i for i, s in enumerate(plan.slow) if s]
    fast_idx = [i for i, s in enumerate(plan.slow) if not s]
    pooled: dict[int, torch.Tensor] = {}
    # Pool slow (stride p) and fast (stride 2p) frames as two batches, then put them back in time order.
    for idx, stride in ((slow_idx, layout.pool_stride), (fast_idx, 2 * layout.pool_stride)):
        if idx:
            out = pool_frames(features[idx], grid, stride, layout.pool_mode)  # [len(idx), h*h, D]
            pooled.update(zip(idx, out.unbind(0), strict=True))

    newline = image_newline.to(features.dtype).view(1, dim)
    token = frame_token.to(features.dtype).view(1, dim) if frame_token is not None else None
    blocks: list[torch.Tensor] = []
    for i, h in enumerate(plan.sides):
        frame = pooled[i]  # [h*h, D]
        if layout.newline == "grid":
            rows = frame.view(h, h, dim)  # [h, h, D]
            rows = torch.cat([rows, newline.view(1, 1, dim).expand(h, 1, dim)], dim=1)  # [h, h+1, D]
            frame = rows.reshape(h * (h + 1), dim)
        elif layout.newline == "frame":
            frame = torch.cat([frame, newline], dim=0)  # [h*h+1, D]
        if layout.frame_token:
            assert token is not None  # a model has its frame_token parameter exactly when its layout asks for one
            frame = torch.cat([frame, token], dim=0)
        blocks.append(frame)
    if layout.newline == "one_token":
        blocks.append(newline)
    packed = torch.cat(blocks, dim=0)  # [N, D]
    if packed.shape[0] != plan.total:  # guards the single-source-of-truth contract
        raise AssertionError(f"packed {packed.shape[0]} tokens but the layout plans {plan.total}")
    return packed
