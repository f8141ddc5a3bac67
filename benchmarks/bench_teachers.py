"""Teacher and augmentation throughput on CPU: the offline teachers at several input sizes, median of rounds.

    python benchmarks/bench_teachers.py --threads 2 --batch 8 --sizes 128 160 224 --rounds 5

Teachers whose packages are not installed are listed as skipped. Each teacher is timed in fp32 and, where the CPU
runs bf16 natively (AMX), under the bf16 autocast teachers use by default. Also times the stage-2 augmentation
(``eupe.data.augment``) per image at the crop size of ``--crop``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
from PIL import Image

import eupe.demo.teachers  # noqa: F401  (registers the demo's stand-in teacher kinds)
from eupe.data.augment import Augment, AugmentConfig
from eupe.teachers import MissingTeacherDependency, TeacherSpec, build_teacher
from eupe.utils.device import fast_bf16

KINDS = ("mobilenet_v2", "efficientnet_lite2", "hed")


def timings(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(min, median) seconds over ``rounds`` calls after a warm-up; min is the better estimate on a busy machine."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.rand(args.batch, 3, 256, 256)
    precisions = ("fp32", "bf16") if fast_bf16("cpu") else ("fp32",)
    print(f"| teacher | input | precision | summary / patches | ms per batch of {args.batch}, min / median | "
          "img/s (min) |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        try:
            build_teacher(TeacherSpec(kind=kind))
        except MissingTeacherDependency as err:
            print(f"| {kind} | skipped: {err} | | | | |")
            continue
        for size in args.sizes:
            for precision in precisions:
                teacher = build_teacher(TeacherSpec(kind=kind, input_size=size, autocast=precision == "bf16"))
                best, median = timings(lambda: teacher(images), args.rounds)  # noqa: B023 (called at once)
                out = teacher(images[:1])
                print(f"| {kind} | {size} | {precision} | {teacher.summary_dim} / {tuple(out.patches.shape[1:])} | "
                      f"{best * 1000:.0f} / {median * 1000:.0f} | {args.batch / best:.1f} |")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    augment = Augment(AugmentConfig(size=args.crop))
    g = torch.Generator().manual_seed(0)
    best, median = timings(lambda: [augment(photo, g) for _ in range(8)], args.rounds)
    print(f"\naugmentation, 640x480 photo -> {args.crop} crop: {best / 8 * 1000:.1f} ms (min) / "
          f"{median / 8 * 1000:.1f} ms (median) per image, one process")


if __name__ == "__main__":
    main()
