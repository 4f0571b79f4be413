"""`videoqa synth run`: source videos -> dynamic-video selection -> recurrent captions -> QA -> 178K records.

Resumable and shardable: every video's outcome (kept with its records, dropped with reasons, or failed with
the error) is written atomically to `OUT/work/<hash>.json` as soon as it is known. A restarted run skips what
is done and retries failures, so a killed run loses at most the videos in flight and never duplicates one.
`--shard i/n` takes the videos whose id hashes to i mod n; `finalize` merges every outcome under OUT (all
shards, once they share OUT) into the record files, sorted by video id, so the result does not depend on
order, interruptions or concurrency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from videoqa.synth.captions import recurrent_captions
from videoqa.synth.question_types import QUESTION_TYPES
from videoqa.synth.schema import LETTERS, QAItem, Teacher, VideoContext, video_records
from videoqa.synth.selection import SelectionConfig, select
from videoqa.video import SamplingSpec, sample_frames

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi"}
KINDS = ("caption", "open_ended", "multiple_choice")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Path = Field(description="A folder of videos (searched recursively) or a manifest (.txt or .jsonl).")
    out: Path = Field(description="Output folder: records, data mix, stats, and work/ (per-video outcomes).")
    name: str = Field(default="synth_v0", description="data_source of the records and prefix of the files.")
    video_prefix: str = Field(
        default="", description="Prepended to video ids in records (so they resolve from the output folder)."
    )
    shard: tuple[int, int] = Field(default=(0, 1), description="(i, n): this run takes videos hashing to i mod n.")
    types: list[str] = Field(default_factory=lambda: [t.name for t in QUESTION_TYPES], description="QA types.")
    selection: SelectionConfig | None = Field(default_factory=SelectionConfig, description="None keeps all.")
    concurrency: int = Field(default=4, ge=1, description="Videos in flight at once.")
    caption_fps: float = Field(default=1.0, gt=0, description="Captioning frame rate (paper: 1 fps).")
    max_caption_frames: int = Field(default=180, ge=1, description="Cap on captioning frames (180 s at 1 fps).")
    frame_size: int = Field(default=384, ge=32, description="Side of the frames sent to the teacher.")


def list_source(source: Path) -> list[tuple[str, Path]]:
    """(id, path) per video; the id is its path relative to the source folder (the records' "video")."""
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        return [(p.relative_to(source).as_posix(), p) for p in paths]
    if not source.is_file():
        raise FileNotFoundError(f"source {source} is neither a folder of videos nor a manifest file")
    root, out = source.parent, []
    for n, line in enumerate(source.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = json.loads(line)["video"] if source.suffix == ".jsonl" else line
        if Path(rel).is_absolute():
            raise ValueError(f"{source}:{n}: use paths relative to the manifest, got {rel!r}")
        out.append((Path(rel).as_posix(), root / rel))
    return sorted(out)


def _hash(video_id: str) -> str:
    return hashlib.sha1(video_id.encode()).hexdigest()


def in_shard(video_id: str, shard: tuple[int, int]) -> bool:
    return int(_hash(video_id)[:8], 16) % shard[1] == shard[0]


# ---- the paper's QA filters (section 3.2) ---------------------------------------------------------------------

_NON_ANSWER = re.compile(
    r"^\s*(the (video|description|caption|clip) )?(does not|doesn't|did not|do not) "
    r"(specify|mention|show|say|state|indicate|provide)|^\s*it is not (clear|specified|mentioned)",
    re.IGNORECASE,
)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def filter_qa(items: list[QAItem], threshold: float = 0.8) -> tuple[list[QAItem], Counter]:
    """Drop non-answers and near-duplicate questions (token Jaccard >= threshold; the paper used sentence
    embeddings, which need a model we cannot download here). Returns kept items and drop counts."""
    kept: list[QAItem] = []
    dropped: Counter = Counter()
    for q in items:
        if _NON_ANSWER.search(q.answer):
            dropped["non-answer"] += 1
            continue
        toks = _tokens(q.question)
        if any(len(toks & _tokens(k.question)) / max(len(toks | _tokens(k.question)), 1) >= threshold for k in kept):
            dropped["near-duplicate"] += 1
            continue
        kept.append(q)
    return kept, dropped


# ---- one video ------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


async def process_video(cfg: RunConfig, teacher: Teacher, video_id: str, path: Path) -> dict:
    """One video's outcome: {"status": kept|dropped|failed, ...}. Never raises for a bad video or teacher."""
    base = {"video": video_id}
    try:
        if cfg.selection is not None:
            sel = await asyncio.to_thread(select, path, video_id, cfg.selection)
            if not sel.kept:
                return {**base, "status": "dropped", "reasons": sel.reasons, "duration": sel.duration}
            scenes = sel.scenes
        else:
            scenes = []
        spec = SamplingSpec(
            fps=cfg.caption_fps,
            max_frames=cfg.max_caption_frames,
            policy="exact",
            size=(cfg.frame_size, cfg.frame_size),
        )
        got = await asyncio.to_thread(sample_frames, path, spec)
        truth_path = path.with_suffix(".json")
        truth = json.loads(truth_path.read_text()) if truth_path.is_file() else None
        ctx = VideoContext(video_id, path, got.duration, got.frames, got.timestamps, truth)
        captions = await recurrent_captions(teacher, ctx)
        qa = await teacher.questions(ctx, captions[-1].text, cfg.types)
        qa, dropped = filter_qa(qa)
        records = video_records(cfg.video_prefix + video_id, cfg.name, captions, qa)
        return {
            **base,
            "status": "kept",
            "duration": round(got.duration, 3),
            "scenes": scenes,
            "qa_dropped": dict(dropped),
            "records": records,
        }
    except Exception as err:  # noqa: BLE001 - a failure is an outcome to record and retry, not a crash
        return {**base, "status": "failed", "error": f"{type(err).__name__}: {err}"}


async def run(cfg: RunConfig, teacher: Teacher) -> dict[str, int]:
    """Process this shard's videos that have no final outcome yet; returns counts by status."""
    work = cfg.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    todo = []
    for video_id, path in list_source(cfg.source):
        if not in_shard(video_id, cfg.shard):
            continue
        done = work / f"{_hash(video_id)[:16]}.json"
        if done.is_file() and json.loads(done.read_text())["status"] != "failed":
            continue
        todo.append((video_id, path, done))
    counts: Counter = Counter()
    gate = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(todo), desc=f"synth shard {cfg.shard[0]}/{cfg.shard[1]}", unit="video")

    async def one(video_id: str, path: Path, done: Path) -> None:
        async with gate:
            outcome = await process_video(cfg, teacher, video_id, path)
        _write_atomic(done, outcome)
        counts[outcome["status"]] += 1
        bar.update(1)

    await asyncio.gather(*(one(*t) for t in todo))
    bar.close()
    usage = teacher.usage()
    if usage:  # spend adds up over resumed runs
        path = cfg.out / f"usage_shard{cfg.shard[0]}of{cfg.shard[1]}.json"
        before = json.loads(path.read_text()) if path.is_file() else {}
        _write_atomic(path, {k: v + before.get(k, 0) for k, v in usage.items()})
    return dict(counts)


# ---- outputs ----------------------------------------------------------------------------------------------------


def _bucket(seconds: float) -> str:
    for hi in (30, 60, 120, 180):
        if seconds < hi:
            return f"<{hi} s"
    return ">=180 s"


def finalize(out: Path, name: str = "synth_v0") -> dict:
    """Merge every outcome under out/work into the record files, data mix and stats report."""
    import yaml

    outcomes = sorted((json.loads(p.read_text()) for p in (out / "work").glob("*.json")), key=lambda o: o["video"])
    merged: dict[str, list] = {k: [] for k in (*KINDS, "levels")}
    stats: dict = {
        "videos": Counter(),
        "dropped_reasons": Counter(),
        "failures": [],
        "multiple_choice_per_type": Counter(),
        "open_ended_per_type": Counter(),
        "per_duration": Counter(),
        "per_source": Counter(),
        "caption_levels": Counter(),
        "answer_letters": Counter(),
        "qa_dropped": Counter(),
    }
    for o in outcomes:
        stats["videos"][o["status"]] += 1
        if o["status"] == "dropped":
            for r in o["reasons"]:
                stats["dropped_reasons"][re.sub(r"[\d.]+", "N", r)] += 1
        elif o["status"] == "failed":
            stats["failures"].append({"video": o["video"], "error": o["error"]})
        else:
            for kind, recs in o["records"].items():
                merged[kind].extend(recs)
            stats["per_duration"][_bucket(o["duration"])] += 1
            stats["qa_dropped"].update(o.get("qa_dropped", {}))
    for r in merged["multiple_choice"]:
        stats["multiple_choice_per_type"][r["question_type"]] += 1
        stats["answer_letters"][r["conversations"][1]["value"][0]] += 1
    for r in merged["open_ended"]:
        stats["open_ended_per_type"][r["question_type"]] += 1
    for r in merged["caption"]:
        stats["per_source"][r["data_source"]] += 1
    for r in merged["levels"]:
        stats["caption_levels"][f"level-{r['level']}"] += 1
    mix = []
    for kind in KINDS:
        path = out / f"{name}_{kind}.json"
        path.write_text(json.dumps(merged[kind], indent=1))
        mix.append({"json_path": path.name, "sampling_strategy": "all"})
    (out / f"{name}_caption_levels.json").write_text(json.dumps(merged["levels"], indent=1))
    (out / "data_mix.yaml").write_text(yaml.safe_dump({"datasets": mix}, sort_keys=False))
    stats = {k: (dict(sorted(v.items())) if isinstance(v, Counter) else v) for k, v in stats.items()}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "stats.md").write_text(_markdown(stats))
    _plot(stats, out / "stats.png")
    return stats


def _markdown(stats: dict) -> str:
    lines = ["# Synthetic data report", "", "| videos | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in stats["videos"].items()]
    lines += ["", "| question type | open-ended | multiple-choice |", "|---|---:|---:|"]
    for t in QUESTION_TYPES:
        oe, mc = stats["open_ended_per_type"].get(t.name, 0), stats["multiple_choice_per_type"].get(t.name, 0)
        lines.append(f"| {t.name} | {oe} | {mc} |")
    for title, key in (
        ("duration", "per_duration"),
        ("source", "per_source"),
        ("caption level", "caption_levels"),
        ("answer letter", "answer_letters"),
        ("dropped because", "dropped_reasons"),
        ("QA filtered out", "qa_dropped"),
    ):
        lines += ["", f"| {title} | count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in stats[key].items()]
    if stats["failures"]:
        lines += ["", "## Failures (retried on the next run)", ""]
        lines += [f"- `{f['video']}`: {f['error']}" for f in stats["failures"]]
    return "\n".join(lines) + "\n"


def _plot(stats: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    names = [t.name for t in QUESTION_TYPES]
    a.barh(names, [stats["open_ended_per_type"].get(n, 0) for n in names])
    a.invert_yaxis()
    a.set_xlabel("open-ended questions")
    a.set_title("QA per question type")
    buckets = list(stats["per_duration"])
    b.bar(buckets, [stats["per_duration"][k] for k in buckets])
    b.set_title("kept videos per duration")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


__all__ = ["LETTERS", "RunConfig", "finalize", "list_source", "run"]
