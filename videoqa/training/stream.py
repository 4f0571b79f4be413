"""Streaming training data: records stay as JSON; frames are decoded in DataLoader worker processes, per batch.

Nothing before the first step grows with the dataset except reading the records and counting their words
(for length grouping). The pieces:

* `VideoQADataset`: map-style, one record -> one tokenized example with its pixel values, decoded by the shared
  sampler (`videoqa.video.sample_frames`) in whichever worker process asks. A missing or unreadable video (or
  an example longer than max_length) is skipped and counted: the next record takes its place, so batches keep
  their size and every rank runs the same number of forward passes (DDP collectives would hang otherwise).
* `GroupedBatchSampler`: the epoch's permutation from (seed, epoch) alone; global batches of batch_size x world
  examples, grouped by estimated length (visual tokens + words) within mega-batches (HF transformers'
  `get_length_grouped_indices` semantics) to cut padding; each rank takes its slice of every global batch, so
  the examples in a step do not depend on how they are split across ranks. DataLoader hands the batches to its
  workers round-robin (its own per-worker sharding) and returns them in order. `start` resumes mid-epoch.
* `FrameCache`: optional on-disk cache of decoded frames, content-addressed (file size and head/tail bytes plus
  the sampling spec, not the path: ranks and runs that see the same file share entries) and size-bounded
  (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoqa.model.layout import VideoLayout, num_video_tokens
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import IMAGE_TAG
from videoqa.training.data import IGNORE, build_example
from videoqa.video import SamplingSpec, VideoError, sample_frames

_PROBE = 64 * 1024  # bytes of the head and the tail that (with the size) identify a file's content


def _touch(path: Path) -> None:
    """Mark as used now, to the nanosecond: a write's own mtime comes from the kernel's coarse clock (a few ms),
    which would tie a write and a use that follow each other closely and make eviction order arbitrary."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


class FrameCache:
    """Decoded frames on disk, shared by workers, ranks and runs; at most `max_bytes` (LRU by access time)."""

    def __init__(self, root: str | Path, spec: SamplingSpec, max_bytes: int) -> None:
        self.root, self.spec, self.max_bytes = Path(root), spec, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._writes = 0

    def key(self, video: Path) -> str:
        """Content address: size + first and last 64 KiB of the file + the sampling spec. Reading the whole file
        to hash it would cost about as much I/O as decoding it; head, tail and size tell real videos apart."""
        h = hashlib.sha256()
        size = video.stat().st_size
        h.update(f"{size}|{self.spec.cache_key()}|".encode())
        with video.open("rb") as f:
            h.update(f.read(_PROBE))
            if size > 2 * _PROBE:
                f.seek(size - _PROBE)
                h.update(f.read(_PROBE))
        return h.hexdigest()[:32]

    def get(self, video: Path) -> tuple[np.ndarray, float, list[float]]:
        path = self.root / f"{self.key(video)}.npz"
        try:
            with np.load(path) as z:
                got = z["frames"], float(z["duration"]), z["timestamps"].tolist()
            _touch(path)  # recently used: evicted last
            return got
        except (FileNotFoundError, OSError, ValueError, KeyError):
            pass  # absent, or a torn/foreign file: decode again and overwrite it
        sampled = sample_frames(video, self.spec)
        tmp = self.root / f".{uuid.uuid4().hex}.tmp.npz"  # unique: several processes may write the same key
        np.savez(tmp, frames=sampled.frames, duration=sampled.duration, timestamps=np.array(sampled.timestamps))
        tmp.replace(path)
        _touch(path)
        self._writes += 1
        if self._writes % 16 == 1:
            self.evict()
        return sampled.frames, sampled.duration, sampled.timestamps

    def evict(self) -> int:
        """Delete least recently used entries until the cache fits; returns how many were deleted."""
        entries = []
        for p in self.root.glob("*.npz"):
            if p.name.startswith("."):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # another process evicted it
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        deleted = 0
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            total -= size
        return deleted


def text_of(record: dict[str, Any]) -> str:
    """The record's words, turn after turn (the <image> tag becomes visual tokens, counted apart)."""
    return "\n".join(
        turn["value"].replace(f"{IMAGE_TAG}\n", "").replace(IMAGE_TAG, "") for turn in record["conversations"]
    )


def estimate_lengths(records: list[dict[str, Any]], layout: VideoLayout, grid: int, num_frames: int) -> list[int]:
    """Visual tokens (`videoqa.model.layout`, at num_frames: an upper bound under fps sampling) + the words of the
    turns, as LLaVA-NeXT's LazySupervisedDataset.lengths counts text (split on whitespace): grouping only needs
    the order of lengths, and tokenizing 1.3M records up front would delay the first step by minutes."""
    visual = num_video_tokens(layout, num_frames, grid)
    return [visual + len(text_of(r).split()) for r in records]


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor  # [F, 3, S, S]
    index: int
    num_frames: int
    skipped: list[tuple[int, str]]  # records that could not be used and were replaced by this one


class VideoQADataset(torch.utils.data.Dataset):
    """One record -> one example, its frames decoded when (and where: the worker) it is asked for."""

    def __init__(
        self,
        records: list[dict[str, Any]],
        root: Path,
        spec: SamplingSpec,
        tokenizer: Any,
        layout: VideoLayout,
        grid: int,
        video_token_id: int,
        image_size: int,
        max_length: int,
        cache: FrameCache | None = None,
        max_tries: int = 64,
    ) -> None:
        self.records, self.root, self.spec = records, root, spec
        self.tokenizer, self.layout, self.grid, self.video_token_id = tokenizer, layout, grid, video_token_id
        self.image_size, self.max_length, self.cache, self.max_tries = image_size, max_length, cache, max_tries

    def __len__(self) -> int:
        return len(self.records)

    def frames(self, record: dict[str, Any]) -> tuple[np.ndarray, float, list[float]]:
        video = self.root / record["video"]
        if self.cache is not None:
            return self.cache.get(video)
        got = sample_frames(video, self.spec)
        return got.frames, got.duration, got.timestamps

    def example(self, i: int) -> Sample:
        """Record i as an example; raises VideoError/OSError/ValueError when it cannot be one."""
        rec = self.records[i]
        frames, duration, stamps = self.frames(rec)
        ids, labels = build_example(
            rec, frames, duration, stamps, self.tokenizer, self.layout, self.grid, self.video_token_id
        )
        if len(ids) > self.max_length:
            raise ValueError(f"{len(ids)} tokens > max_length {self.max_length}")
        pixels = frames_to_pixel_values(frames, self.image_size)
        return Sample(ids, labels, pixels, i, len(frames), [])

    def __getitem__(self, i: int) -> Sample:
        skipped: list[tuple[int, str]] = []
        for k in range(min(self.max_tries, len(self.records))):
            j = (i + k) % len(self.records)
            try:
                sample = self.example(j)
            except (VideoError, OSError, ValueError, KeyError) as err:
                skipped.append((j, f"{type(err).__name__}: {err}"))
                continue
            sample.skipped = skipped
            return sample
        raise RuntimeError(
            f"{len(skipped)} records in a row from index {i} could not be used (last: {skipped[-1][1]}); "
            "check video_root and the data"
        )


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    videos: list[list[torch.Tensor]]
    indices: list[int]
    visual_tokens: int
    skipped: list[tuple[int, str]]

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.attention_mask.to(device),
            [[v.to(device) for v in vs] for vs in self.videos],
            self.indices,
            self.visual_tokens,
            self.skipped,
        )


class Collator:
    """Right-pads a list of samples into a Batch (a class, not a closure: workers may be spawned)."""

    def __init__(self, pad_id: int, video_token_id: int) -> None:
        self.pad_id, self.video_token_id = pad_id, video_token_id

    def __call__(self, samples: list[Sample]) -> Batch:
        longest = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_id)  # [B, L]
        labels = torch.full((len(samples), longest), IGNORE)  # [B, L]
        mask = torch.zeros((len(samples), longest), dtype=torch.long)  # [B, L]
        for i, s in enumerate(samples):
            input_ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
            labels[i, : len(s.labels)] = torch.tensor(s.labels)
            mask[i, : len(s.input_ids)] = 1
        visual = int((input_ids == self.video_token_id).sum())
        return Batch(
            input_ids,
            labels,
            mask,
            [[s.pixel_values] for s in samples],
            [s.index for s in samples],
            visual,
            [x for s in samples for x in s.skipped],
        )


class GroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's micro-batches of an epoch, deterministic in (seed, epoch); `start` skips the first ones."""

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
        megabatch: int = 32,
    ) -> None:
        self.lengths, self.batch_size, self.world, self.rank = lengths, batch_size, world, rank
        self.seed, self.group, self.megabatch = seed, group_by_length, megabatch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def __len__(self) -> int:
        """Micro-batches per epoch (every rank has the same number); a dataset smaller than one global batch
        wraps around to fill it."""
        return max(len(self.lengths) // self.global_batch, 1)

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        perm = list(range(len(self.lengths)))
        rng.shuffle(perm)
        g = self.global_batch
        need = len(self) * g
        perm = (perm * (need // max(len(perm), 1) + 1))[:need]  # drop the tail (or wrap a tiny dataset)
        batches = [perm[i : i + g] for i in range(0, need, g)]
        if not self.group:
            return batches
        # Length grouping: sort within mega-batches of `megabatch` global batches, then shuffle the batches so
        # lengths do not sweep long -> short through the epoch; the longest batch goes first so that a batch
        # that does not fit in memory fails at step 1, not hours in.
        mega = self.megabatch * g
        grouped: list[list[int]] = []
        for m in range(0, need, mega):
            chunk = sorted(perm[m : m + mega], key=lambda i: -self.lengths[i])
            grouped.extend(chunk[i : i + g] for i in range(0, len(chunk), g))
        longest = max(range(len(grouped)), key=lambda b: self.lengths[grouped[b][0]])
        first = grouped.pop(longest)
        rng.shuffle(grouped)
        return [first, *grouped]

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches(self.epoch)[self.start :]:
            yield batch[lo:hi]


def make_loader(
    dataset: VideoQADataset, sampler: GroupedBatchSampler, collator: Collator, num_workers: int, prefetch: int = 2
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers else None,
        persistent_workers=False,
        # Its own generator: a DataLoader iterator otherwise draws its workers' base seed from the global torch
        # RNG, so a resumed run (which starts a new iterator mid-epoch) would continue with a different RNG
        # stream than the uninterrupted run (LoRA dropout masks differed).
        generator=torch.Generator().manual_seed(sampler.seed * 1_000_003 + sampler.epoch),
    )
