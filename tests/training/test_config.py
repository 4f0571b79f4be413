"""The recipe's typed config (videoqa.training.config.TrainConfig): what it accepts and what it refuses by name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from videoqa.training.config import TrainConfig


def test_tiny_overrides_keep_their_types_and_unknown_fields_are_named() -> None:
    # configs/demo.yaml's tiny model: an int, a float (the LM's init std) and a bool, each passed to TinySpec as is
    cfg = TrainConfig(
        model="tiny",
        data="d.json",
        output_dir="out",
        tiny={"layers": 4, "initializer_range": 0.09, "tie_word_embeddings": False},
    )
    assert cfg.tiny == {"layers": 4, "initializer_range": 0.09, "tie_word_embeddings": False}
    assert [type(v) for v in cfg.tiny.values()] == [int, float, bool]
    with pytest.raises(ValidationError, match=r"unknown TinySpec fields \['init_std'\]"):
        TrainConfig(model="tiny", data="d.json", output_dir="out", tiny={"init_std": 0.09})
