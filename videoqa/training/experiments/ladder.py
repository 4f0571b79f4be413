"""The learnability ladder (issue 18): where does the tiny demo LM stop learning to read what it is shown?

Each rung asks the demo's Binary question, "Does a {colour} object appear in the video?", of the same model the
demo trains (`init_tiny` with the demo's `tiny:` overrides, through `LlavaVideoForCausalLM.forward`), and only
what the LM is shown changes:

* rung 1 (`tokens`): N text tokens, a few of them colour words (the same token the question names), the rest
  filler words; "is token X among these N tokens?".
* rung 2 (`frames`): N visual tokens of F still frames (one coloured object per frame, the world's colours,
  shapes and object size), through the real vision tower, projector and video layout (20 tokens per frame in
  the tiny layout).

The loss is on the answer's first token ("Y" of "Yes" / "N" of "No"); accuracy compares those two logits on a
fixed held-out set. Everything is seeded; results (curve CSV/JSON + PNG) go to benchmarks/learnability/.

    python -m videoqa.training.experiments.ladder tokens --n 20 --max-steps 2000
    python -m videoqa.training.experiments.ladder frames --frames 8 --max-steps 2000
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import typer
from tqdm import tqdm
from transformers import AutoTokenizer

from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import num_video_tokens
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import VIDEO_TOKEN, expand_video_placeholders
from videoqa.model.tiny import TinySpec, init_tiny
from videoqa.synth.world import COLOURS, SHAPES, Scene, SceneObject, Shot, render_frame

OUT = Path(__file__).resolve().parents[3] / "benchmarks" / "learnability"
COLOUR_NAMES = sorted(COLOURS)
FILLER_WORDS = [
    "circle",
    "square",
    "triangle",
    "star",
    "box",
    "disk",
    "moves",
    "left",
    "right",
    "up",
    "down",
    "toward",
    "away",
    "across",
    "stops",
    "still",
    "fast",
    "slow",
    "camera",
    "appears",
    "leaves",
    "enters",
    "exits",
    "behind",
    "front",
    "hidden",
    "first",
    "last",
    "then",
    "after",
    "before",
    "during",
    "end",
    "middle",
]
"""Rung 1's distractors: words of the tokenizer's corpus that are not colours."""
PROMPT = "<|im_start|>user\n{video}\nDoes a {colour} object appear in the video?<|im_end|>\n<|im_start|>assistant\n"
"""The demo's Binary question (videoqa.synth.oracle.q_binary) in the checkpoint's ChatML, without the system turn
and time instruction (constant text that every example shares)."""

AUX_PROMPT = "<|im_start|>user\n{video}\nWhich colour is the object?<|im_end|>\n<|im_start|>assistant\n"
"""Lever `aux`: a question whose answer (the object's colour) the tokens alone decide."""


@dataclass
class Example:
    input_ids: list[int]
    answer: int
    """Token id of the answer's first token."""
    present: bool
    frames: torch.Tensor | None = None
    """Pixel values [F, 3, S, S] (rung 2)."""


@dataclass
class Setup:
    rung: str
    n_tokens: int
    frames: int = 0
    steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    lr_vision: float = 1e-3
    warmup: int = 60
    eval_every: int = 50
    eval_examples: int = 256
    stop_at: float = 0.95
    """Stop once held-out accuracy reached this three evaluations in a row."""
    seed: int = 0
    tiny: dict[str, Any] = field(default_factory=lambda: {"layers": 4})
    """TinySpec overrides (configs/demo.yaml's `tiny:`)."""
    projector_norm: bool = False
    """Lever: LayerNorm on the projector output, then a learned scale initialised to the text embeddings' RMS."""
    aux: float = 0.0
    """Lever: share of training examples that ask `AUX_PROMPT` instead (rungs 1 and 2)."""
    curriculum: int = 0
    """Lever: for this many first steps every question names the same colour."""
    init_std: float | None = None
    """Lever: re-initialise the LM's matrices and embeddings with this std (Qwen2's initializer_range is 0.02)."""
    tag: str = ""


class Tokens:
    """Rung 1: the Binary question about N tokens of text, 1-4 of them distinct colour words (like 1-4 objects of
    distinct colours in the simple world), the others filler words; half the questions name a present colour."""

    def __init__(self, tokenizer: Any, n: int) -> None:
        if n < 4:
            raise ValueError(f"need at least 4 tokens to hide up to 4 colours among, got {n}")
        self.n = n
        self.colour_ids = {c: _single(tokenizer, f" {c}") for c in COLOUR_NAMES}
        self.filler_ids = [_single(tokenizer, f" {w}") for w in FILLER_WORDS]
        self.yes, self.no = _answer_ids(tokenizer)
        self.tokenizer = tokenizer

    def example(self, rng: random.Random, aux: bool = False, only: str | None = None) -> Example:
        """A Binary example; `only`: the question names this colour (curriculum). `aux`: instead, one colour among
        the N tokens and the question "Which colour is the object?", answered by that colour's word: an answer
        that depends on the tokens alone (the Binary answer depends on neither the tokens nor the question
        alone, only on both together)."""
        present = rng.random() < 0.5
        if aux:
            shown = [rng.choice(COLOUR_NAMES)]
        elif only is None:
            shown = rng.sample(COLOUR_NAMES, rng.randint(1, 4))
        else:
            others = rng.sample([c for c in COLOUR_NAMES if c != only], rng.randint(1, 4) - present)
            shown = [only, *others] if present else others or [rng.choice([c for c in COLOUR_NAMES if c != only])]
        colour = only or (rng.choice(shown) if present else rng.choice([c for c in COLOUR_NAMES if c not in shown]))
        content = [rng.choice(self.filler_ids) for _ in range(self.n)]
        for pos, c in zip(rng.sample(range(self.n), len(shown)), shown, strict=True):
            content[pos] = self.colour_ids[c]
        prompt = AUX_PROMPT if aux else PROMPT
        before, after = prompt.format(video="\x00", colour=colour).split("\x00")
        ids = self.tokenizer.encode(before) + content + self.tokenizer.encode(after)
        if aux:
            return Example(ids, self.tokenizer.encode(shown[0])[0], True)
        return Example(ids, self.yes if present else self.no, present)


class Frames:
    """Rung 2: the Binary question about F still frames, each showing one object (a world colour and shape, the
    world's object size, anywhere the world may put it) on the simple world's background; the frames' colours are
    1-4 distinct colours, and half the questions name one of them."""

    def __init__(self, tokenizer: Any, config: LlavaVideoConfig, frames: int, bank: int, seed: int) -> None:
        self.frames = frames
        self.tokenizer = tokenizer
        self.yes, self.no = _answer_ids(tokenizer)
        self.video_id = config.video_token_id
        self.count = num_video_tokens(config.layout, frames, config.grid)
        self.size = config.image_size
        self.bank = {c: [self._render(c, random.Random(f"{seed}-{c}-{i}")) for i in range(bank)] for c in COLOUR_NAMES}

    def _render(self, colour: str, rng: random.Random) -> torch.Tensor:
        scene = Scene(0, 1.0, 1, 256, 192, shots=[Shot(0, 0.0, 1.0, "dark gray")])
        margin = scene.object_size
        start = (rng.uniform(margin, 256 - margin), rng.uniform(margin, 192 - margin))
        scene.objects = [SceneObject(0, colour, rng.choice(SHAPES), "left", 0.0, start, 0.0, 1.0)]
        return frames_to_pixel_values(render_frame(scene, 0.0, scene.object_size)[None], self.size)[0]

    def example(self, rng: random.Random, aux: bool = False, only: str | None = None) -> Example:
        """A Binary example; `only`: the question names this colour (curriculum). `aux`: instead, every frame
        shows one colour and the question is "Which colour is the object?", answered by that colour's word (LLaVA's
        stage-1 idea: visual tokens learn to say what colour they show, which the Binary question then compares)."""
        most = min(4, self.frames)
        if aux:
            colour = rng.choice(COLOUR_NAMES)
            ids = self.tokenizer.encode(AUX_PROMPT.format(video=VIDEO_TOKEN))
            ids = expand_video_placeholders(ids, self.video_id, [self.count])
            pixels = torch.stack([rng.choice(self.bank[colour]) for _ in range(self.frames)])
            return Example(ids, self.tokenizer.encode(colour)[0], True, pixels)
        if only is None:
            shown = rng.sample(COLOUR_NAMES, rng.randint(1, most))
            present = rng.random() < 0.5
            colour = rng.choice(shown) if present else rng.choice([c for c in COLOUR_NAMES if c not in shown])
        else:
            present, colour = rng.random() < 0.5, only
            others = [c for c in COLOUR_NAMES if c != only]
            shown = (
                [only, *rng.sample(others, rng.randint(1, most) - 1)]
                if present
                else rng.sample(others, rng.randint(1, most))
            )
        per_frame = shown + [rng.choice(shown) for _ in range(self.frames - len(shown))]
        rng.shuffle(per_frame)
        ids = self.tokenizer.encode(PROMPT.format(video=VIDEO_TOKEN, colour=colour))
        ids = expand_video_placeholders(ids, self.video_id, [self.count])
        pixels = torch.stack([rng.choice(self.bank[c]) for c in per_frame])
        return Example(ids, self.yes if present else self.no, present, pixels)


def _single(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens in this tokenizer; the ladder needs single tokens")
    return ids[0]


def _answer_ids(tokenizer: Any) -> tuple[int, int]:
    """First tokens of "Yes" and "No", the start of the oracle's Binary answers; they must differ."""
    yes, no = tokenizer.encode("Yes")[0], tokenizer.encode("No")[0]
    if yes == no:
        raise ValueError("'Yes' and 'No' start with the same token")
    return yes, no


def _batch(examples: list[Example], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list | None]:
    """Left-padded ids [B, L] (so the answer is predicted at the last position), mask, answer ids [B], videos."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, width - len(e.input_ids) :] = torch.tensor(e.input_ids)
        mask[i, width - len(e.input_ids) :] = 1
    videos = [[e.frames] for e in examples] if examples[0].frames is not None else None
    return ids, mask, torch.tensor([e.answer for e in examples]), videos


class ProjectorNorm(torch.nn.Module):
    """LayerNorm on the projector's output and a learned scalar scale, initialised to the RMS of the text
    embeddings, so visual tokens enter the LM at the size text tokens do (a lever of issue 18)."""

    def __init__(self, hidden: int, scale: float) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * self.scale


def build(setup: Setup, workdir: Path) -> tuple[LlavaVideoForCausalLM, Any]:
    """The demo's model (configs/demo.yaml: `model: tiny`, `tiny: {layers: 4}`), built the way training builds it."""
    init_tiny(workdir, seed=setup.seed, spec=TinySpec(**setup.tiny))
    model = LlavaVideoForCausalLM.from_pretrained(workdir)
    if setup.init_std is not None:
        for module in model.language_model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, std=setup.init_std)
    if setup.projector_norm:
        embedding = model.language_model.get_input_embeddings()
        assert isinstance(embedding, torch.nn.Embedding)  # Qwen2's token embedding (typed as any Module)
        emb = embedding.weight
        rms = float(emb.pow(2).mean().sqrt() * math.sqrt(emb.shape[1]))  # a text embedding's typical norm
        proj = model.multi_modal_projector
        proj.linear_2 = torch.nn.Sequential(proj.linear_2, ProjectorNorm(emb.shape[1], rms / math.sqrt(emb.shape[1])))
    return model, AutoTokenizer.from_pretrained(workdir)


def _write(setup: Setup, rows: list[dict], reached: dict, out: Path) -> dict:
    """The curve so far as JSON and CSV (rewritten after every evaluation: a run stopped early keeps its curve)."""
    result = {
        "setup": asdict(setup),
        "steps_to_accuracy": reached,
        "final_acc": rows[-1]["val_acc"],
        "best_acc": max(r["val_acc"] for r in rows),
        "steps_run": rows[-1]["step"],
        "seconds": rows[-1]["s"],
        "curve": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    name = f"{setup.rung}_n{setup.n_tokens}{setup.tag}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    with (out / f"{name}.csv").open("w") as f:
        f.write("step,train_loss,val_loss,val_acc,seconds\n")
        for r in rows:
            train = "" if r["train_loss"] is None else f"{r['train_loss']:.5f}"
            f.write(f"{r['step']},{train},{r['val_loss']:.5f},{r['val_acc']:.4f},{r['s']:.1f}\n")
    return result


def run(setup: Setup, out: Path = OUT) -> dict:
    """Train one rung from scratch; returns (and writes) the curve and steps-to-accuracy."""
    torch.manual_seed(setup.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = build(setup, Path(tmp))
    if setup.rung == "tokens":
        task: Tokens | Frames = Tokens(tokenizer, setup.n_tokens)
    else:
        task = Frames(tokenizer, model.config, setup.frames, bank=64, seed=setup.seed)
        setup.n_tokens = task.count
    # A run that names one colour throughout is scored on that question; any other on the full Binary question.
    fixed = COLOUR_NAMES[0] if setup.curriculum >= setup.steps else None
    held = [task.example(random.Random(f"held-{setup.seed}-{i}"), only=fixed) for i in range(setup.eval_examples)]
    rng = random.Random(setup.seed)
    pad = tokenizer.pad_token_id
    groups = [
        {"params": [p for n, p in model.named_parameters() if n.startswith("vision_tower.")], "lr": setup.lr_vision},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("vision_tower.")], "lr": setup.lr},
    ]
    optim = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(setup.warmup, 1)))
    yes, no = task.yes, task.no

    def answer_logits(batch: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, answers, videos = _batch(batch, pad)
        # LlavaVideoForCausalLM.forward without the logits of every position: only the last one (which predicts
        # the answer's first token) is scored, which saves a quarter of a step's time at N=160.
        embeds = model.build_inputs_embeds(ids, videos)
        hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        logits = model.language_model.lm_head(hidden.last_hidden_state[:, -1])
        return logits.float(), answers  # [B, V]

    def evaluate() -> tuple[float, float]:
        model.eval()
        correct, loss = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(held), 64):
                logits, answers = answer_logits(held[i : i + 64])
                loss += float(torch.nn.functional.cross_entropy(logits, answers, reduction="sum"))
                said_yes = logits[:, yes] > logits[:, no]
                correct += int((said_yes == (answers == yes)).sum())
        model.train()
        return correct / len(held), loss / len(held)

    rows: list[dict] = []
    acc, val = evaluate()
    rows.append({"step": 0, "train_loss": None, "val_loss": val, "val_acc": acc, "s": 0.0})
    reached: dict[str, int | None] = {"0.75": None, "0.9": None, "0.95": None}
    streak, t0, window = 0, time.perf_counter(), []
    model.train()
    bar = tqdm(range(1, setup.steps + 1), desc=f"{setup.rung} N={setup.n_tokens}{setup.tag}", unit="step")
    for step in bar:
        only = COLOUR_NAMES[0] if step <= setup.curriculum else None
        batch = [task.example(rng, aux=rng.random() < setup.aux, only=only) for _ in range(setup.batch)]
        logits, answers = answer_logits(batch)
        loss = torch.nn.functional.cross_entropy(logits, answers)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the training recipe's grad_clip
        optim.step()
        sched.step()
        window.append(loss.item())
        if step % setup.eval_every == 0:
            acc, val = evaluate()
            rows.append(
                {
                    "step": step,
                    "train_loss": sum(window) / len(window),
                    "val_loss": val,
                    "val_acc": acc,
                    "s": time.perf_counter() - t0,
                }
            )
            window = []
            for k in reached:
                if reached[k] is None and acc >= float(k):
                    reached[k] = step
            bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", acc=f"{acc:.2f}")
            _write(setup, rows, reached, out)
            streak = streak + 1 if acc >= setup.stop_at else 0
            if streak >= 3:
                break
    bar.close()
    result = _write(setup, rows, reached, out)
    return result


def plot(names: list[str], png: Path, title: str, out: Path = OUT) -> None:
    """Held-out accuracy and loss of several runs (their JSON files under `out`) in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        data = json.loads((out / f"{name}.json").read_text())
        steps = [r["step"] for r in data["curve"]]
        ax_acc.plot(steps, [r["val_acc"] for r in data["curve"]], label=name)
        ax_loss.plot(steps, [r["val_loss"] for r in data["curve"]], label=name)
    ax_acc.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy", ylim=(0.3, 1.02))
    ax_loss.set(xlabel="step", ylabel="held-out loss (answer token)")
    ax_acc.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def tokens(
    n: int = 20,
    max_steps: int = 2000,
    lr: float = 1e-3,
    warmup: int = 60,
    batch: int = 16,
    seed: int = 0,
    heads: int = 2,
    kv_heads: int = 1,
    hidden: int = 128,
    init_std: float | None = None,
    aux: float = 0.0,
    curriculum: int = 0,
    tag: str = "",
) -> None:
    """Rung 1: "is token X among these N tokens?"."""
    setup = Setup("tokens", n, steps=max_steps, lr=lr, warmup=warmup, batch=batch, seed=seed, tag=tag)
    setup.init_std, setup.aux, setup.curriculum = init_std, aux, curriculum
    setup.tiny |= {"heads": heads, "kv_heads": kv_heads, "hidden": hidden}
    _report(run(setup))


@app.command()
def frames(
    frames: int = 8,
    max_steps: int = 2000,
    lr: float = 1e-3,
    lr_vision: float = 1e-3,
    warmup: int = 60,
    batch: int = 16,
    seed: int = 0,
    projector_norm: bool = False,
    heads: int = 2,
    kv_heads: int = 1,
    hidden: int = 128,
    init_std: float | None = None,
    aux: float = 0.0,
    curriculum: int = 0,
    tag: str = "",
) -> None:
    """Rung 2: the same question about F still frames through the tower, projector and layout."""
    setup = Setup(
        "frames",
        0,
        frames=frames,
        steps=max_steps,
        lr=lr,
        lr_vision=lr_vision,
        warmup=warmup,
        batch=batch,
        seed=seed,
        projector_norm=projector_norm,
        curriculum=curriculum,
        init_std=init_std,
        aux=aux,
        tag=tag,
    )
    setup.tiny |= {"heads": heads, "kv_heads": kv_heads, "hidden": hidden}
    _report(run(setup))


@app.command("plot")
def plot_cmd(png: str, title: str, names: list[str]) -> None:
    """Plot runs (JSON names under benchmarks/learnability/, without .json) into one PNG there."""
    plot(names, OUT / png, title)


def _report(result: dict) -> None:
    print(json.dumps({k: result[k] for k in ("steps_to_accuracy", "final_acc", "best_acc", "steps_run", "seconds")}))


if __name__ == "__main__":
    torch.set_num_threads(1)  # the CPU is shared; experiments run one thread each
    app()
