"""W&B tracking of a training run (the `wandb` recipe setting, videoqa.training.tracking), read back from the
offline run file wandb writes: the resolved config, one train/loss per step equal to loss.jsonl, the loss curve,
the exit code (0 finished, 1 failed on a crash), and the error a recipe gets when wandb is not installed."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.training.test_train import SMALL
from tests.utils.recipes import write_recipe
from videoqa.synth.demo import run_demo
from videoqa.training import train as train_module
from videoqa.training.config import load_config
from videoqa.training.train import train

wandb = pytest.importorskip("wandb")  # the `tracking` extra (dev includes it)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    run_demo(out, videos=4, seed=3, preset="simple", world=SMALL)
    return out


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline W&B, nothing sent anywhere: the run is a file under OUTPUT_DIR/wandb, read back below."""
    for var in ("WANDB_DIR", "WANDB_RUN_ID", "WANDB_NAME", "WANDB_RUN_GROUP", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the standard variable; the recipe leaves `mode` unset
    monkeypatch.setenv("WANDB_PROJECT", "videoqa-test")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _recipe(tmp: Path, data: Path, **kw: object) -> Path:
    cfg = {
        "model": "tiny",
        "data": str(data / "procedural_v0_multiple_choice.json"),
        "output_dir": str(tmp / "run"),
        "num_frames": 2,
        "batch_size": 2,
        "max_steps": 3,
        "num_workers": 0,
        "lr": 1e-3,
        "tensorboard": False,
        "wandb": {"tags": ["test"]},
    } | kw
    return write_recipe(tmp, cfg)


def _records(run_file: Path) -> list:
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then LevelDB-log blocks of 32 KiB
    whose chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) carry serialized `Record` protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B"
    block, pos, out, pending = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break  # zero padding at the end of a file still being written
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _read_run(out_dir: Path, launches: int = 1) -> dict:
    """What the (last) launch of a training run wrote to its offline W&B run file."""
    runs = sorted((out_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # one per launch, in start order
    assert len(runs) == launches, runs
    history: dict[str, list[tuple[int, float]]] = {}
    config: dict[str, object] = {}
    info: dict[str, object] = {}
    for r in _records(runs[-1]):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, []).append((r.history.step.num, value))
        elif kind == "run":  # the config comes with the run (later changes would come as `config` records)
            config |= {i.key: json.loads(i.value_json) for i in r.run.config.update}
            info |= {"id": r.run.run_id, "project": r.run.project, "name": r.run.display_name}
            info["tags"] = list(r.run.tags)
        elif kind == "config":
            config |= {i.key: json.loads(i.value_json) for i in r.config.update}
        elif kind == "exit":
            info["exit_code"] = r.exit.exit_code
    return {"history": history, "config": config, "info": info, "files": runs[-1].parent / "files"}


def test_finished_run_has_the_config_every_step_loss_and_the_loss_curve(tmp_path: Path, data: Path) -> None:
    cfg = load_config(_recipe(tmp_path, data))
    train(cfg)
    out = tmp_path / "run"
    run = _read_run(out)

    assert run["info"]["exit_code"] == 0  # W&B: Finished
    assert run["info"]["project"] == "videoqa-test"  # WANDB_PROJECT
    assert run["info"]["name"] == "run" and run["info"]["tags"] == ["test"]  # output_dir's name; the recipe's tags
    for key, value in cfg.model_dump().items():  # the resolved config, defaults included
        assert run["config"][key] == value, key

    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    losses = run["history"]["train/loss"]
    assert [s for s, _ in losses] == [1, 2, 3]  # one value per step
    assert [v for _, v in losses] == pytest.approx([r["loss"] for r in rows], rel=1e-9)
    for key in ("lr/llm", "lr/vision", "lr/projector", "train/grad_norm", "throughput/samples_per_s"):
        assert [s for s, _ in run["history"][key]] == [1, 2, 3], key
    assert [v for _, v in run["history"]["lr/llm"]] == pytest.approx([r["lrs"]["llm"] for r in rows])
    assert [s for s, _ in run["history"]["time/to_first_step_s"]] == [1]

    assert (run["files"] / "loss.png").read_bytes() == (out / "loss.png").read_bytes()
    assert (run["files"] / "config.yaml").exists()


def test_a_crash_ends_the_run_failed(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    # The crash comes at the first checkpoint (step 2), after two steps were logged.
    monkeypatch.setattr(train_module, "_save_state", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        train(load_config(_recipe(tmp_path, data, save_every=2)))
    run = _read_run(tmp_path / "run")
    assert run["info"]["exit_code"] == 1  # W&B: Failed
    assert [s for s, _ in run["history"]["train/loss"]] == [1, 2]


def test_a_resumed_launch_continues_the_same_run(tmp_path: Path, data: Path) -> None:
    recipe = _recipe(tmp_path, data, stop_after=2)  # a time-boxed launch, then the same recipe again
    train(load_config(recipe))
    first = _read_run(tmp_path / "run")
    train(load_config(recipe))
    second = _read_run(tmp_path / "run", launches=2)
    assert second["info"]["id"] == first["info"]["id"]  # `wandb sync` appends the second launch to the first
    assert [s for s, _ in first["history"]["train/loss"]] == [1, 2]
    assert [s for s, _ in second["history"]["train/loss"]] == [3]
    assert first["info"]["exit_code"] == second["info"]["exit_code"] == 0


def test_bad_wandb_settings_are_named(tmp_path: Path, data: Path) -> None:
    with pytest.raises(ValueError, match=r"wandb\.mode='offlin'"):
        load_config(_recipe(tmp_path, data, wandb={"mode": "offlin"}))
    with pytest.raises(ValueError, match=r"wandb\.projekt='x'"):
        load_config(_recipe(tmp_path, data, wandb={"projekt": "x"}))
    assert load_config(_recipe(tmp_path, data, wandb=False)).wandb is None
    assert load_config(_recipe(tmp_path, data, wandb=True)).wandb is not None


def test_wandb_set_but_not_installed_fails_before_training(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError

    def not_reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(train_module, "_build_model", not_reached)
    with pytest.raises(RuntimeError, match=r"sets `wandb`.*pip install 'videoqa\[tracking\]'"):
        train(load_config(_recipe(tmp_path, data, wandb=True)))
    assert not (tmp_path / "run" / "wandb").exists()
