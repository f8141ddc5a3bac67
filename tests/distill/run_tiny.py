"""A tiny distillation run for subprocess tests (SIGKILL resume, torchrun DDP/FSDP).

Usage: python -m tests.distill.run_tiny OUT_DIR [key=value ...]; env TINY_STEP_SLEEP adds a pause per step;
env TINY_STRATEGIES=ddp,fsdp runs once per parallel strategy into OUT_DIR/<strategy> (one torchrun launch);
``<strategy>_compiled`` runs it with the student compiled (aot_eager: torch.compile without code generation).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from eupe.config import load_config
from eupe.distill.config import DistillConfig
from eupe.distill.trainer import Distiller
from tests.distill.helpers import TensorViews, random_images, tiny_overrides, tiny_teacher


def build(out_dir: str, overrides: list[str]) -> Distiller:
    cfg = load_config(DistillConfig, None, tiny_overrides(out_dir) + overrides)
    teachers = [tiny_teacher("ta", 1, dim=24, input_size=32), tiny_teacher("tb", 2, dim=16, input_size=16)]
    return Distiller(cfg, teachers=teachers, primary=TensorViews(random_images(16), cfg.data.augment.size))


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    strategies = [s for s in os.environ.get("TINY_STRATEGIES", "").split(",") if s]
    for strategy in strategies:
        parallel, _, compiled = strategy.partition("_")
        extra = ["student.compile=true", "student.compile_backend=aot_eager"] if compiled else []
        build(os.path.join(argv[0], strategy), argv[1:] + [f"train.parallel={parallel}", *extra]).run()
    if strategies:
        return 0
    distiller = build(argv[0], argv[1:])
    pause = float(os.environ.get("TINY_STEP_SLEEP", "0"))
    if pause:
        original = distiller.train_step

        def slow_step(step: int):
            time.sleep(pause)
            return original(step)

        distiller.train_step = slow_step
    distiller.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
