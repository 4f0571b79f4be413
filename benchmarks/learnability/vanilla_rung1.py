"""Rung 1 of the learnability ladder on a plain torch.nn transformer, to tell a hard task from a bad setup.

    python benchmarks/learnability/vanilla_rung1.py [--n 4] [--gap 0] [--steps 6000] [--batch 16]

Abstract tokens instead of the tokenizer's words: 6 colours, 34 fillers, a question marker. The sequence is
[BOS, gap pads, N content tokens (1-4 distinct colours among fillers), gap pads, Q, colour, gap pads] and the
last position answers yes/no: "is the asked colour among the content?". Same width, depth, heads, batch,
learning rate and clipping as the demo LM (4 layers, 128 wide, 2 heads, AdamW 1e-3, batch 16, clip 1), but
PyTorch's default initialisation (uniform, ~1/sqrt(width)) and learned absolute positions. Prints held-out
accuracy on 256 fixed examples every 250 steps; stops above 97%.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch import nn

COLOURS, FILLERS = list(range(6)), list(range(6, 40))
Q, BOS, YES, NO, PAD = 40, 41, 42, 43, 44
VOCAB = 45


def example(rng: random.Random, n: int, gap: int) -> tuple[list[int], int]:
    present = rng.random() < 0.5
    shown = rng.sample(COLOURS, rng.randint(1, 4))
    colour = rng.choice(shown) if present else rng.choice([c for c in COLOURS if c not in shown])
    content = [rng.choice(FILLERS) for _ in range(n)]
    for pos, c in zip(rng.sample(range(n), len(shown)), shown, strict=True):
        content[pos] = c
    return [BOS] + [PAD] * gap + content + [PAD] * gap + [Q, colour] + [PAD] * gap, YES if present else NO


class Model(nn.Module):
    def __init__(self, width: int = 128, heads: int = 2, layers: int = 4, positions: int = 512) -> None:
        super().__init__()
        self.embed, self.pos = nn.Embedding(VOCAB, width), nn.Embedding(positions, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf")), 1)
        hidden = self.blocks(self.embed(ids) + self.pos(torch.arange(t)), mask=causal, is_causal=True)  # [B, T, W]
        return self.head(hidden[:, -1])  # [B, V]: the answer position


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--gap", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = random.Random(0)
    model = Model()
    optim = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.0)
    held = [example(random.Random(f"held-{i}"), args.n, args.gap) for i in range(256)]
    held_ids, held_answers = torch.tensor([s for s, _ in held]), torch.tensor([a for _, a in held])
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = [example(rng, args.n, args.gap) for _ in range(args.batch)]
        ids, answers = torch.tensor([s for s, _ in batch]), torch.tensor([a for _, a in batch])
        loss = nn.functional.cross_entropy(model(ids), answers)
        optim.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % 250 == 0:
            with torch.no_grad():
                logits = model(held_ids)
            acc = float(((logits[:, YES] > logits[:, NO]) == (held_answers == YES)).float().mean())
            took = time.perf_counter() - t0
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {acc:.3f} ({took:.0f} s)")
            if acc > 0.97:
                break


if __name__ == "__main__":
    main()
