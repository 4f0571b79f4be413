"""Multiple-choice accuracy per question type (and a match score for open-ended answers), through vLLM via
LocalEngine (the service's engine path). Written as JSON, a markdown table and a
bar chart."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from videoqa.model.layout import max_frames_for_budget, num_video_tokens
from videoqa.model.prompt import IMAGE_TAG
from videoqa.training.data import load_records
from videoqa.training.lmms.scoring import answer_letter
from videoqa.video import SamplingSpec


def _answer_letter(record: dict) -> str:
    return record["conversations"][1]["value"].strip()[0]


def _chance(record: dict) -> float:
    return 1 / max(record["conversations"][0]["value"].count("\n") - 2, 1)  # options after "Options:"


def _question(record: dict) -> str:
    return record["conversations"][0]["value"].replace(IMAGE_TAG, "", 1).lstrip("\n")


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: the simple match score for open-ended answers."""
    pred, ref = _tokens(prediction), _tokens(reference)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def resolve_data(data: str | Path) -> Path:
    """A data folder (its data_mix.yaml), a data-mix YAML or a 178K json file."""
    data = Path(data)
    if data.is_dir():
        if not (data / "data_mix.yaml").is_file():
            raise FileNotFoundError(f"{data} has no data_mix.yaml; pass a 178K json file or a data-mix YAML")
        return data / "data_mix.yaml"
    return data


class ContextTooShortError(ValueError):
    """The prompt at this frame count does not fit the checkpoint's context; the message says what fits."""


def checkpoint_dtype(cfg: Any) -> str:
    """The dtype the checkpoint's weights are stored in (bfloat16 for converted LLaVA-Video releases). Named
    explicitly: vLLM's "auto" would run a float32 checkpoint in half precision."""
    dtype = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "float32"
    return str(dtype).removeprefix("torch.")


def model_len_for(cfg: Any, chat: Any, records: list[dict], frames: int, max_new_tokens: int) -> int:
    """Context the evaluation needs: the video's tokens at `frames` frames under the checkpoint's layout
    (videoqa.model.layout), plus the longest prompt's text with a time instruction for that many frames of a
    long video, plus the answer. A converted 7B at 64 frames needs ~12k, far past a fixed 4096."""
    visual = num_video_tokens(cfg.layout, frames, cfg.grid)
    stamps = [9999.99] * frames  # the widest timestamps: an upper bound on the time instruction's tokens
    prompts = [chat.video_question(_question(r), 99999.99, stamps) for r in records] or [[0]]
    text = max(len(ids) for ids in prompts) - 1  # the <video> placeholder itself
    need = visual + text + max_new_tokens
    limit = int(cfg.text.max_position_embeddings)
    if need > limit:
        fit = max_frames_for_budget(cfg.layout, limit - text - max_new_tokens, cfg.grid)
        raise ContextTooShortError(
            f"{frames} frames need {need} tokens ({visual} for the video), over the checkpoint's context of {limit}; "
            f"pass --frames {fit} or fewer"
        )
    return need


async def evaluate_engine(
    checkpoint: str | Path,
    data: str | Path,
    num_frames: int | None = None,
    max_open_ended: int = 200,
    concurrency: int = 8,
    likelihood: bool = True,
    dtype: str | None = None,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
) -> dict[str, Any]:
    """Multiple-choice accuracy per type and open-ended token F1, through vLLM (LocalEngine: the service's path).

    Frames: the checkpoint's own num_frames (what it was fine-tuned with) unless given, sampled exactly; the
    prompt is the service's (ChatML, time instruction, question). Multiple choice is scored two ways: the
    letter the model generates (the paper's format), and, with `likelihood`, the option whose text the model
    finds likeliest to open its answer to the question without options (lm-eval-harness style).

    Engine: the checkpoint's dtype unless `dtype` says otherwise, `tensor_parallel_size` GPUs, and a context
    (`max_model_len`, default: `model_len_for`) that fits the longest prompt at this frame count.
    """
    import asyncio

    from tqdm import tqdm

    from videoqa.model.chat import ChatFormat
    from videoqa.model.engine import GenerationRequest, LocalEngine
    from videoqa.video import sample_frames

    records, root = load_records(resolve_data(data))
    mc = [r for r in records if "Options:" in r["conversations"][0]["value"]]
    oe = [r for r in records if "question_type" in r and "Options:" not in r["conversations"][0]["value"]]
    oe = oe[:max_open_ended]
    from videoqa.model.config import LlavaVideoConfig

    cfg = LlavaVideoConfig.from_pretrained(checkpoint)
    chat = ChatFormat.from_pretrained(checkpoint)
    n = num_frames or cfg.num_frames or cfg.max_frames
    model_len = max_model_len or model_len_for(cfg, chat, mc + oe, n, max_new_tokens=48)
    engine = LocalEngine(
        checkpoint,
        dtype=dtype or checkpoint_dtype(cfg),
        max_model_len=model_len,
        max_num_seqs=concurrency,
        tensor_parallel_size=tensor_parallel_size,
        kv_cache_gib=1,
    )
    spec = SamplingSpec(num_frames=n, policy="exact", size=(cfg.image_size, cfg.image_size))
    decoding: dict[Path, asyncio.Future] = {}
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(mc) + len(oe), desc="evaluating", unit="question")

    async def frames_of(record: dict) -> Any:
        """Each video decoded once: a video's questions are adjacent and run concurrently, so they share one
        decode task instead of each starting its own."""
        video = root / record["video"]
        if video not in decoding:
            decoding[video] = asyncio.ensure_future(asyncio.to_thread(sample_frames, video, spec))
        return await decoding[video]

    async def answer(record: dict, max_tokens: int) -> str:
        async with gate:
            got = await frames_of(record)
            req = GenerationRequest(
                prompt=chat.video_question(_question(record), got.duration, got.timestamps),
                frames=got.frames,
                max_tokens=max_tokens,
                temperature=0.0,
            )
            text = ""
            async for chunk in engine.generate(req):
                text = chunk.text
            bar.update(1)
            return text

    async def by_likelihood(record: dict) -> int:
        """Index of the option whose text the model finds likeliest as the start of its open-ended answer."""
        question, _, options = _question(record).partition("\nOptions:\n")
        texts = [line.split(". ", 1)[1] for line in options.splitlines() if ". " in line]
        async with gate:
            got = await frames_of(record)
            prompt = chat.video_question(question, got.duration, got.timestamps)
            scores = []
            for text in texts:
                answer = chat.encode_text(text[0].upper() + text[1:] + ".")
                scores.append(await engine.score(prompt + answer, got.frames, len(answer)))
        return int(np.argmax(scores))

    await engine.start()
    try:
        mc_out = await asyncio.gather(*(answer(r, 4) for r in mc))
        ll_out = await asyncio.gather(*(by_likelihood(r) for r in mc)) if likelihood else []
        oe_out = await asyncio.gather(*(answer(r, 48) for r in oe))
    finally:
        bar.close()
        await engine.stop()
    rows = []
    for i, (r, text) in enumerate(zip(mc, mc_out, strict=True)):
        row = {
            "type": r.get("question_type", "unknown"),
            "correct": answer_letter(text) == _answer_letter(r),
            "chance": _chance(r),
        }
        if likelihood:
            row["likelihood"] = "ABCDEFGH"[ll_out[i]] == _answer_letter(r)
        rows.append(row)
    result = summarize(rows)
    f1 = [token_f1(text, r["conversations"][1]["value"]) for r, text in zip(oe, oe_out, strict=True)]
    result["open_ended"] = {"n": len(f1), "token_f1": float(np.mean(f1)) if f1 else 0.0}
    result["setup"] = {
        "checkpoint": str(checkpoint),
        "frames": n,
        "engine": "vllm",
        "dtype": dtype or checkpoint_dtype(cfg),
        "max_model_len": model_len,
        "tensor_parallel_size": tensor_parallel_size,
    }
    return result


def summarize(rows: list[dict]) -> dict[str, Any]:
    by: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by[row["type"]].append(row)

    def cell(v: list[dict]) -> dict[str, Any]:
        out = {
            "n": len(v),
            "accuracy": float(np.mean([x["correct"] for x in v])) if v else 0.0,
            "chance": float(np.mean([x["chance"] for x in v])) if v else 0.0,
        }
        if v and "likelihood" in v[0]:
            out["likelihood_accuracy"] = float(np.mean([x["likelihood"] for x in v]))
        return out

    return {"overall": cell(rows), "by_type": {t: cell(v) for t, v in sorted(by.items())}}


def markdown(result: dict[str, Any]) -> str:
    ll = "likelihood_accuracy" in result["overall"]
    head = "| question type | n | generated letter | " + ("option likelihood | " if ll else "") + "chance |"
    lines = [head, "|---|---:|---:|" + ("---:|" if ll else "") + "---:|"]

    def row(name: str, v: dict) -> str:
        extra = f" {v['likelihood_accuracy']:.1%} |" if ll else ""
        return f"| {name} | {v['n']} | {v['accuracy']:.1%} |{extra} {v['chance']:.1%} |"

    lines += [row(t, v) for t, v in result["by_type"].items()]
    lines.append(row("**overall**", result["overall"]))
    if "open_ended" in result:
        lines += ["", f"Open-ended: token F1 {result['open_ended']['token_f1']:.2f} on {result['open_ended']['n']}."]
    return "\n".join(lines)


def write_reports(result: dict[str, Any], json_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    json_path.with_suffix(".md").write_text(markdown(result) + "\n")
    types = list(result["by_type"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(types))
    ll = "likelihood_accuracy" in result["overall"]
    width = 0.4 if ll else 0.8
    ax.bar(x - (width / 2 if ll else 0), [result["by_type"][t]["accuracy"] for t in types], width, label="letter")
    if ll:
        ax.bar(x + width / 2, [result["by_type"][t]["likelihood_accuracy"] for t in types], width, label="likelihood")
    ax.set_xticks(x, types, rotation=35, ha="right", fontsize=7)
    ax.plot(x, [result["by_type"][t]["chance"] for t in types], "k_", markersize=18, label="chance")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"multiple-choice accuracy (overall {result['overall']['accuracy']:.1%})")
    fig.tight_layout()
    fig.savefig(json_path.with_suffix(".png"), dpi=110)
    plt.close(fig)
