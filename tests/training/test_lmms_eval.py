"""The lmms-eval bridge: `videoqa lmms-task` writes our multiple-choice data as an lmms-eval task, and lmms-eval
(its own environment, .venv-lmms) runs it with the gateway (serving the demo checkpoint) as its model
(`--model videoqa`): the answers it records are the gateway's own for the same video and question, scored by
`videoqa eval`'s letter rule."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from videoqa.training.lmms.scoring import answer_letter
from videoqa.training.lmms.task import write_task
from videoqa.video.testing import make_test_video

ROOT = Path(__file__).resolve().parents[2]
LMMS_PYTHON = ROOT / ".venv-lmms" / "bin" / "python"
OPTIONS = "Options:\nA. one object\nB. two objects\nC. a red square\nD. nothing"


def _data(tmp: Path) -> Path:
    """Three procedural clips (different sizes, lengths, GOPs) with a multiple-choice question each, plus an
    open-ended record that has no letter to score."""
    tmp.mkdir(parents=True, exist_ok=True)
    clips = [
        make_test_video(tmp / "a.mp4", seconds=2, fps=8, size=(64, 48)),
        make_test_video(tmp / "b.mp4", seconds=3, fps=10, size=(96, 64), gop=10),
        make_test_video(tmp / "c.mp4", seconds=4, fps=6, size=(80, 80)),
    ]
    records = [
        {
            "id": f"q{i}",
            "video": clip.name,
            "question_type": "Counting",
            "conversations": [
                {"from": "human", "value": f"<image>\nHow many objects are in clip {i}?\n{OPTIONS}"},
                {"from": "gpt", "value": f"{'ABC'[i]}."},
            ],
        }
        for i, clip in enumerate(clips)
    ]
    records.append(
        {
            "id": "open",
            "video": "a.mp4",
            "question_type": "Description",
            "conversations": [{"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "Bars."}],
        }
    )
    (tmp / "eval.json").write_text(json.dumps(records))
    return tmp / "eval.json"


def test_lmms_task_holds_the_multiple_choice_questions_as_eval_asks_them(tmp_path: Path) -> None:
    data = _data(tmp_path / "data")
    path = write_task(data, tmp_path / "task", "tiny_mc")
    docs = [json.loads(line) for line in (tmp_path / "task" / "tiny_mc.jsonl").read_text().splitlines()]
    assert [d["id"] for d in docs] == ["q0", "q1", "q2"]  # the open-ended record has no letter: left out
    assert [d["answer"] for d in docs] == ["A", "B", "C"]
    assert docs[1]["question"] == f"How many objects are in clip 1?\n{OPTIONS}"  # no <image> tag, options kept
    assert all(Path(d["video"]).is_absolute() and Path(d["video"]).is_file() for d in docs)
    text = path.read_text()
    assert "doc_to_visual: !function utils.doc_to_visual" in text  # a YAML tag lmms-eval resolves, not a string
    assert "from videoqa.training.lmms.task_utils import" in (tmp_path / "task" / "utils.py").read_text()
    with pytest.raises(ValueError, match="task name"):
        write_task(data, tmp_path / "task", "Tiny-MC")
    (tmp_path / "open.json").write_text(json.dumps(json.loads(data.read_text())[3:]))
    (tmp_path / "a.mp4").write_bytes((tmp_path / "data" / "a.mp4").read_bytes())
    with pytest.raises(ValueError, match="no multiple-choice records"):
        write_task(tmp_path / "open.json", tmp_path / "task2")


def test_lmms_eval_scores_the_gateway_on_the_task(tmp_path: Path, demo_gateway) -> None:
    assert LMMS_PYTHON.exists(), "no .venv-lmms: run scripts/lmms-eval-env.sh (make setup does)"
    # The embedded demo checkpoint (in-process engine): it answers in words, where the session's random tiny
    # checkpoint says nothing before lmms-eval's "\n\n" stop, and equal empty answers would prove nothing.
    gw = demo_gateway
    task = write_task(_data(tmp_path / "data"), tmp_path / "task", "tiny_mc")
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),  # the datasets cache of the task's jsonl, not ~/.cache
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    cmd = [
        str(LMMS_PYTHON),
        "-m",
        "lmms_eval",
        "--model",
        "videoqa",
        "--model_args",
        f"base_url={gw.url},num_frames=4",
        "--tasks",
        "tiny_mc",
        "--include_path",
        str(task.parent),
        "--output_path",
        str(out),
        "--log_samples",
        "--verbosity",
        "DEBUG",  # lmms-eval logs a failed evaluation and exits 0 unless DEBUG
    ]
    # cwd away from the repository: a videoqa.egg-info there (the project venv's editable install) would shadow
    # the lmms venv's entry points
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (results_file,) = out.glob("*_results.json")
    (samples_file,) = out.glob("*_samples_tiny_mc.jsonl")
    results = json.loads(results_file.read_text())
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert results["n-samples"]["tiny_mc"]["effective"] == 3 and len(samples) == 3
    docs = [json.loads(line) for line in (task.parent / "tiny_mc.jsonl").read_text().splitlines()]

    # What the gateway answers to the same video and question with the task's settings (greedy, 4 tokens, the
    # "\n\n" stop lmms-eval adds), asked directly: the bridge must have sent exactly this.
    answers = []
    with httpx.Client(base_url=gw.url, timeout=120) as client:
        for doc, sample in zip(docs, samples, strict=True):
            with open(doc["video"], "rb") as f:
                file_id = client.post("/v1/files", files={"file": ("v.mp4", f, "video/mp4")}).json()["id"]
            body = {
                "file_id": file_id,
                "question": doc["question"],
                "num_frames": 4,
                "max_tokens": 4,
                "temperature": 0.0,
                "stop": ["\n\n"],
            }
            direct = client.post("/v1/video/qa", json=body)
            assert direct.status_code == 200, direct.text
            response = sample["filtered_resps"]  # the generated text (a list of one with some filters)
            response = response[0] if isinstance(response, list) else response
            assert response == direct.json()["answer"], (sample, direct.json())
            answers.append(response)
            assert sample["mc_accuracy"] == float(answer_letter(response) == doc["answer"])
    assert any(answers), answers  # the tiny checkpoint says something, so equal answers mean the same inputs
    accuracy = results["results"]["tiny_mc"]["mc_accuracy,none"]
    assert accuracy == pytest.approx(sum(s["mc_accuracy"] for s in samples) / 3)
