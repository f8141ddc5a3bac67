"""Throughput of ``forward_features``: this package vs a naive implementation of the same math (and, optionally,
the reference implementation), interleaved in one process or (``--isolated``) each in new processes, median of
several rounds.

    python benchmarks/bench_forward.py --model eupe_vits16 --batch 8 --size 256 --rounds 7
    python benchmarks/bench_forward.py --reference-repo PATH/TO/facebookresearch/EUPE   # adds the reference column
    python benchmarks/bench_forward.py --device cuda --amp bf16 --batch 128 --rounds 20  # a GPU
    python benchmarks/bench_forward.py --compile   # adds this package under torch.compile (weights frozen)
    python benchmarks/bench_forward.py --transformers --amp bf16   # adds transformers' DINOv3ViTModel, bf16
    python benchmarks/bench_forward.py --reference-repo PATH --isolated   # each timing in a fresh process

In one process the implementations share the memory allocator: buffers one of them frees serve the next one's
allocations without page faults, which flatters allocation-heavy code. ``--isolated`` times each implementation
in its own new process per round (shuffled order), as a user runs one model, and reports the same table.

The naive baseline recomputes RoPE in every block, applies it by slicing and concatenating, writes attention as
``softmax(q k^T / sqrt(d)) v`` and LayerScale as a separate multiply. It shares the weights, and its outputs are
checked against ours before timing. ``--transformers`` adds the model as a transformers user runs it: this package's
Hugging Face export (``eupe.export.hf.save_hf``) loaded with ``DINOv3ViTModel.from_pretrained`` (SDPA attention).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import eupe
from eupe.layers.attention import qkv_bias
from eupe.models import VisionTransformer


def _naive_rope(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, num_prefix: int) -> torch.Tensor:
    body = t[:, :, num_prefix:]
    x1, x2 = body.chunk(2, -1)
    return torch.cat([t[:, :, :num_prefix], body * cos + torch.cat([-x2, x1], -1) * sin], 2)


def naive_forward_features(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Straightforward ViT forward with the same weights; returns the normalised patch tokens."""
    tokens = model.patch_embed.proj(x)
    B, D, H, W = tokens.shape
    tokens = tokens.flatten(2).transpose(1, 2)
    prefix = torch.cat([model.cls_token, model.storage_tokens], 1).expand(B, -1, -1)
    x = torch.cat([prefix, tokens], 1)
    p = model.num_prefix_tokens
    for blk in model.blocks:
        sin, cos = model.rope_embed(H=H, W=W)  # recomputed per block, as the reference does
        h = blk.norm1(x)
        attn = blk.attn
        qkv = F.linear(h, attn.qkv.weight, qkv_bias(attn.qkv)).reshape(B, -1, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q, k = _naive_rope(q, sin, cos, p), _naive_rope(k, sin, cos, p)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)).softmax(-1)
        out = attn.proj((weights @ v).transpose(1, 2).reshape(B, -1, D))
        x = x + out * blk.ls1.gamma
        x = x + blk.mlp(blk.norm2(x)) * blk.ls2.gamma
    return model.norm(x)[:, p:]


def load_reference_model(repo: Path, name: str, state_dict: dict) -> torch.nn.Module:
    """Imports the reference package (also called ``eupe``) under a private module table, builds ``name``."""
    ours = {k: v for k, v in sys.modules.items() if k == "eupe" or k.startswith("eupe.")}
    for key in ours:
        del sys.modules[key]
    sys.path.insert(0, str(repo))
    try:
        backbones = importlib.import_module("eupe.hub.backbones")
        model = getattr(backbones, name)(pretrained=False)
    finally:
        sys.path.remove(str(repo))
        for key in [k for k in sys.modules if k == "eupe" or k.startswith("eupe.")]:
            del sys.modules[key]
        sys.modules.update(ours)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def time_rounds(fns: dict[str, Callable[[], object]], rounds: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)  # interleaved, in a new order each round: noise and position effects hit all alike
        for name in order:
            fn = fns[name]
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def build_inputs(args: argparse.Namespace, device: torch.device) -> tuple[VisionTransformer, torch.Tensor]:
    torch.manual_seed(0)
    model = eupe.create_model(args.model).eval().to(device)
    for module in model.modules():  # non-trivial LayerScale so every branch matters in the parity check
        if hasattr(module, "gamma") and module.gamma is not None:
            module.gamma.data.fill_(0.5)
    return model, torch.randn(args.batch, 3, args.size, args.size, device=device)


COMPILED = "eupe, torch.compile (frozen weights)"
TRANSFORMERS = "transformers DINOv3ViTModel"


def load_transformers_model(model: VisionTransformer) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` exported to a Hugging Face folder and loaded back with transformers; returns its patch tokens."""
    from eupe.export.hf import load_transformers_features, save_hf

    with tempfile.TemporaryDirectory() as folder:
        save_hf(model, folder)
        features = load_transformers_features(folder).to(next(model.parameters()).device)
    return lambda x: features(x)[1]


def implementation(args: argparse.Namespace, model: VisionTransformer, x: torch.Tensor,
                   name: str) -> Callable[[], object]:
    """The forward function called ``name``, built on its own (a worker process must not warm up the others)."""
    if name == "naive":
        return lambda: naive_forward_features(model, x)
    if name == "eupe":
        return lambda: model.forward_features(x)
    if name == "reference":
        reference = load_reference_model(args.reference_repo, args.model, model.state_dict()).to(x.device)
        return lambda: reference.forward_features(x)
    if name == TRANSFORMERS:
        hf_forward = load_transformers_model(model)
        return lambda: hf_forward(x)
    if name == COMPILED:
        compiled = torch.compile(model.forward_features, dynamic=False, options={"freezing": True})
        return lambda: compiled(x)
    raise ValueError(f"unknown implementation {name!r}")


def check_parity(fns: dict[str, Callable[[], object]]) -> None:
    """Prints each implementation's max. difference to this package's patch tokens (the naive one returns them)."""
    ours = fns["eupe"]()["x_norm_patchtokens"]
    for name, fn in fns.items():
        if name != "eupe":
            start = time.perf_counter()
            out = fn()
            out = out if isinstance(out, torch.Tensor) else out["x_norm_patchtokens"]
            print(f"max |{name} - eupe| = {(out - ours).abs().max().item():.2e} "
                  f"(first call {time.perf_counter() - start:.1f} s)")


def time_isolated(args: argparse.Namespace, names: list[str]) -> dict[str, list[float]]:
    """Per round and implementation (shuffled), a new process builds it, warms it up and times ``--iterations``
    calls; the round's time is their median."""
    times: dict[str, list[float]] = {name: [] for name in names}
    order, shuffle = list(names), random.Random(0).shuffle
    for _ in range(args.rounds):
        shuffle(order)
        for name in order:
            cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--batch", str(args.batch),
                   "--size", str(args.size), "--warmup", str(args.warmup), "--iterations", str(args.iterations),
                   "--device", args.device, "--amp", args.amp]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--reference-repo", str(args.reference_repo)] if args.reference_repo else []
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"worker for {name!r} failed:\n{result.stderr[-2000:]}")
            times[name].append(statistics.median(json.loads(result.stdout.strip().splitlines()[-1])))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eupe_vits16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reference-repo", type=Path, default=None, help="a clone of facebookresearch/EUPE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast for every column")
    parser.add_argument("--compile", action="store_true",
                        help="add a column: this package under torch.compile with inductor's weight freezing")
    parser.add_argument("--transformers", action="store_true",
                        help="add a column: transformers' DINOv3ViTModel loaded from this package's HF export")
    parser.add_argument("--isolated", action="store_true",
                        help="time every implementation in a new process per round (no shared allocator state)")
    parser.add_argument("--iterations", type=int, default=5, help="--isolated: timed calls per process")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one --isolated timing
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = (["naive", "eupe"] + (["reference"] if args.reference_repo else [])
             + ([TRANSFORMERS] if args.transformers else []) + ([COMPILED] if args.compile else []))
    model, x = build_inputs(args, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    with torch.inference_mode(), autocast:
        if args.worker:
            fn = implementation(args, model, x, args.worker)
            print(json.dumps(time_rounds({args.worker: fn}, args.iterations, args.warmup, device)[args.worker]))
            return
        fns = {name: implementation(args, model, x, name) for name in names}
        check_parity(fns)
        if args.isolated:
            del fns
            times = time_isolated(args, names)
        else:
            times = time_rounds(fns, args.rounds, args.warmup, device)
    baselines = [name for name in ("reference", TRANSFORMERS) if name in times] or ["naive"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    how = (f"each in a new process per round ({args.iterations} timed calls, median)" if args.isolated
           else "interleaved in one process")
    print(f"\n{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.amp}, {where}, "
          f"median of {args.rounds} rounds, {how}\n")
    print("| implementation | img/s | ms/batch (median) | spread (min-max ms) | "
          + " | ".join(f"vs {name}" for name in baselines) + " |")
    print("|---|---|---|---|" + "---|" * len(baselines))
    for name, ts in times.items():
        med = statistics.median(ts)
        # Paired per-round ratios: robust to the machine's speed drifting during the run.
        ratios = [statistics.median(b / t for b, t in zip(times[base], ts)) for base in baselines]
        print(f"| {name} | {args.batch / med:.1f} | {med * 1e3:.0f} | {min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f} | "
              + " | ".join(f"{ratio:.2f}x" for ratio in ratios) + " |")


if __name__ == "__main__":
    main()
