"""Throughput of ``forward_features``: this package vs a naive implementation of the same math (and, optionally,
the reference implementation), in one process, interleaved, median of several rounds.

    python benchmarks/bench_forward.py --model eupe_vits16 --batch 8 --size 256 --rounds 7
    python benchmarks/bench_forward.py --reference-repo PATH/TO/facebookresearch/EUPE   # adds the reference column
    python benchmarks/bench_forward.py --device cuda --amp bf16 --batch 128 --rounds 20  # a GPU

The naive baseline recomputes RoPE in every block, applies it by slicing and concatenating, writes attention as
``softmax(q k^T / sqrt(d)) v`` and LayerScale as a separate multiply. It shares the weights, and its outputs are
checked against ours before timing.
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import statistics
import sys
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
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = eupe.create_model(args.model).eval().to(device)
    for module in model.modules():  # non-trivial LayerScale so every branch matters in the parity check
        if hasattr(module, "gamma") and module.gamma is not None:
            module.gamma.data.fill_(0.5)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    fns: dict[str, Callable[[], object]] = {"naive": lambda: naive_forward_features(model, x),
                                            "eupe": lambda: model.forward_features(x)}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    with torch.inference_mode(), autocast:
        ours = model.forward_features(x)["x_norm_patchtokens"]
        diff = (naive_forward_features(model, x) - ours).abs().max().item()
        print(f"max |eupe - naive| = {diff:.2e}")
        if args.reference_repo:
            reference = load_reference_model(args.reference_repo, args.model, model.state_dict()).to(device)
            fns["reference"] = lambda: reference.forward_features(x)
            ref_diff = (reference.forward_features(x)["x_norm_patchtokens"] - ours).abs().max().item()
            print(f"max |eupe - reference| = {ref_diff:.2e}")
        times = time_rounds(fns, args.rounds, args.warmup, device)
    baseline = "reference" if "reference" in times else "naive"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\n{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.amp}, {where}, "
          f"median of {args.rounds} interleaved rounds\n")
    print(f"| implementation | img/s | ms/batch (median) | spread (min-max ms) | vs {baseline} |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        # Paired per-round ratios: robust to the machine's speed drifting during the run.
        ratio = statistics.median(b / t for b, t in zip(times[baseline], ts))
        print(f"| {name} | {args.batch / med:.1f} | {med * 1e3:.0f} | {min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f} "
              f"| {ratio:.2f}x |")


if __name__ == "__main__":
    main()
