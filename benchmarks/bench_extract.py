"""Does ``eupe extract`` keep the model busy? Extraction throughput vs bare ``forward_features`` throughput.

Both are measured in one process, interleaved round by round (the machine's load changes over time), on the same
images: synthetic photo-like JPEGs (500x375, like ImageNet) unless ``--images`` names a folder. The bare
forward runs on tensors prepared beforehand; extraction decodes, transforms, runs the model and writes shards.
Prints the median images/s of each and their ratio (target: >= 0.85 on a 2-core CPU with ViT-S at 224).

Usage: python benchmarks/bench_extract.py [--model eupe_vits16 --num-images 64 --rounds 3 --workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import eupe
from eupe.data.images import list_images, load_image
from eupe.extract import ExtractConfig, extract_features, make_eval_transform


def make_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        base = np.stack([np.sin(xx / (20 + i) + c) * 90 + np.cos(yy / (15 + c)) * 60 + 128 for c in range(3)], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eupe_vits16")
    parser.add_argument("--images", default=None, help="image folder (default: synthetic JPEGs)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = eupe.create_model(args.model).to(device).eval().requires_grad_(False)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.images) if args.images else Path(tmp) / "images"
        if not args.images:
            src.mkdir()
            make_images(src, args.num_images)
        records, _ = list_images(src)
        transform = make_eval_transform(args.resolution)
        batches = torch.stack([transform(load_image(r.path)) for r in records]).split(args.batch_size)
        n = len(records)
        config = ExtractConfig(resolution=args.resolution, batch_size=args.batch_size, num_workers=args.workers)
        with torch.inference_mode(), autocast:  # warm-up
            model.forward_features(batches[0].to(device))
        bare, extract = [], []
        for r in range(args.rounds):
            start = time.perf_counter()
            with torch.inference_mode(), autocast:
                for b in batches:
                    model.forward_features(b.to(device))["x_norm_clstoken"].float().cpu()
            bare.append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            extract_features(model, src, Path(tmp) / f"out{r}", config, device=device, autocast=autocast,
                             progress=False)
            extract.append(n / (time.perf_counter() - start))
            print(f"round {r}: bare {bare[-1]:.2f} img/s, extract {extract[-1]:.2f} img/s")
    b, e = statistics.median(bare), statistics.median(extract)
    print(f"{args.model} @ {args.resolution}, {n} images, batch {args.batch_size}, {args.workers} workers, "
          f"{args.threads} threads: bare forward {b:.2f} img/s, extract {e:.2f} img/s, ratio {e / b:.3f} "
          f"({'OK' if e / b >= 0.85 else 'below'} the 0.85 target)")


if __name__ == "__main__":
    main()
