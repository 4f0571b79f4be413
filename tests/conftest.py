"""Session-wide fixtures shared by every package's tests: tiny checkpoints built with the project's own code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: make_tiny_checkpoint(layout=None, seed=0) -> checkpoint dir, built once per (layout, seed)."""
    from videoqa.model.layout import VideoLayout
    from videoqa.model.tiny import init_tiny

    built: dict[tuple, Path] = {}

    def make(layout: VideoLayout | None = None, seed: int = 0) -> Path:
        layout = layout or VideoLayout()
        key = (layout, seed)
        if key not in built:
            name = (
                f"tiny-{layout.pool_mode}-{layout.newline}-s{layout.slowfast_stride}-ft{int(layout.frame_token)}-{seed}"
            )
            built[key] = init_tiny(tmp_path_factory.mktemp(name), seed=seed, layout=layout)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_tiny_checkpoint: Callable[..., Path]) -> Path:
    """A random tiny checkpoint with the default LLaVA-Video layout (average, grid, s=1)."""
    return make_tiny_checkpoint()
