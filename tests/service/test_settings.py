"""Settings are checked when the process starts, and the engine settings reach vLLM's engine arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.service.settings import Settings, SettingsError, load_settings


def test_a_bad_default_policy_fails_the_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOQA_DEFAULT_POLICY", "slow")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "VIDEOQA_DEFAULT_POLICY" in str(err.value) and "'slow'" in str(err.value) and "'exact'" in str(err.value)
    # `videoqa serve` stops before anything starts (no app, no engine) and says what to change.
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "VIDEOQA_DEFAULT_POLICY" in result.output and "'fast' or 'exact'" in result.output


@pytest.mark.parametrize(
    ("name", "value"),
    [("DTYPE", "float8"), ("KV_CACHE_DTYPE", "fp4"), ("GPU_MEMORY_UTILIZATION", "1.5"), ("LOG_FORMAT", "xml")],
)
def test_other_enumerated_settings_are_checked_at_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"VIDEOQA_{name}", value)
    with pytest.raises(SettingsError, match=f"VIDEOQA_{name}"):
        load_settings()


def test_engine_settings_reach_vllms_engine_args(tiny_checkpoint: Path) -> None:
    settings = Settings(
        gpu_memory_utilization=0.5,
        enforce_eager=True,
        quantization="fp8",
        kv_cache_dtype="fp8",
        max_num_batched_tokens=1024,
        max_num_seqs=4,
        engine_args={"block_size": 32, "max_logprobs": 7, "max_num_seqs": 3},
    )
    args = settings.local_engine(tiny_checkpoint).engine_args()  # builds vLLM's AsyncEngineArgs, starts nothing
    assert type(args).__name__ == "AsyncEngineArgs"
    assert args.gpu_memory_utilization == 0.5 and args.enforce_eager is True and args.quantization == "fp8"
    assert args.kv_cache_dtype == "fp8" and args.max_num_batched_tokens == 1024
    assert args.block_size == 32 and args.max_logprobs == 7
    assert args.max_num_seqs == 3  # the escape hatch is applied last: it overrides the named setting


def test_unset_engine_settings_leave_vllms_defaults(tiny_checkpoint: Path) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs

    args = Settings().local_engine(tiny_checkpoint).engine_args()
    defaults = AsyncEngineArgs(model=str(tiny_checkpoint))
    for name in ("gpu_memory_utilization", "enforce_eager", "quantization", "max_num_batched_tokens"):
        assert getattr(args, name) == getattr(defaults, name), name


def test_an_unknown_engine_argument_fails_at_construction(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown vLLM engine argument\(s\) \['blok_size'\]"):
        Settings(engine_args={"blok_size": 32}).local_engine(tiny_checkpoint)


def test_engine_args_are_read_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOQA_ENGINE_ARGS", '{"block_size": 32}')
    assert load_settings().engine_args == {"block_size": 32}
