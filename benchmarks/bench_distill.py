"""Distillation-trainer benchmarks (CPU-friendly; not a test). Run: python benchmarks/bench_distill.py

1. Trainer overhead: a full stage-2 step (data, teacher, normalisation, student forward+backward with heads and
   loss, clipping, AdamW) against the sum of its parts timed in isolation (teacher forward, student
   forward+backward, optimizer step), interleaved, median of several rounds. Target: ratio <= 1.15, eager
   (``overhead``) and with the student compiled (``overhead_compiled``).
2. Feature cache: epoch 1 (teacher runs for every view and fills the cache, student trains) against epoch 2
   (student trains from the cache) with a teacher >= 4x the student's cost. Target: epoch 2 >= 3x faster.
3. Peak memory of a small run (CPU: max RSS of the process; CUDA: max allocated).
4. Data: views decoded and augmented per second from JPEG files (stage-2 augmentation at 256 px), inside the step
   (``data.workers=0``) and in worker processes, and the wait for the first batch.
5. Step variants: the full stage-2 step eager and under ``torch.compile`` (``student.compile``), in fp32 and bf16
   autocast (``train.amp``), with stage 3's changing scales and with gradient checkpointing, interleaved after
   each variant's warm-up (compilation), median per step and the ratio to its eager twin. bf16 pays off only
   where the CPU runs it natively (AMX, AVX512-BF16; see ``fast_bf16``).

``--only overhead,variants`` runs a subset.

Memory plan at the paper's scale (bf16 autocast, AdamW fp32 states):
* Stage 1, 1.9B proxy with FSDP2 (``train.parallel: fsdp``, ``fully_shard`` per block then the root): fp32
  params + grads + 2 Adam moments = 16 B/param = 30 GB in total, sharded over N GPUs (0.95 GB each at N = 32).
  Activations with activation checkpointing (``student.grad_checkpointing: true``) keep one block input per
  block: 50 blocks x tokens x 1536 x 2 B; at 448 px (~790 tokens with registers) that is ~120 MB per image, plus
  one block's recompute (~0.5 GB per image at 448 with the 8960-wide MLP); a local batch of 32-64 images fits an
  80 GB GPU. Frozen teachers in bf16 add ~2 x 1.9B + 0.84B params x 2 B = 9.3 GB per GPU (replicated,
  inference only; shard them with FSDP too if memory is short), or 0 with the feature cache.
* Stages 2-3, ViT-B student (86M) with DDP: params/grads/moments 1.4 GB per GPU; the frozen bf16 proxy 3.8 GB.
  Global batch 8192 over 64 GPUs = 128 images per GPU at 256 px (261 tokens): ViT-B activations without
  checkpointing ~25 MB per image in bf16 -> ~3.2 GB; the 3072-wide heads add ~1.6 GB. Stage 3 at 512 px
  (1029 tokens) quadruples activations: enable checkpointing or use accumulation (``train.accumulation_steps``).

Measured on one H200 (``benchmarks/gpu_check.py``, README "On a GPU"): stage 1 with the 1.9B proxy (FSDP2 on one
GPU, so unsharded: 30 GB of states), checkpointing, bf16, a local batch of 32 at up to 448 px: 37.0 GiB peak;
stage 2, ViT-B student with the 1.9B proxy teacher, local batch 128 at 256: 25.3 GiB peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_check's image writer

from eupe.config import load_config  # noqa: E402
from eupe.distill.config import DistillConfig  # noqa: E402
from eupe.distill.data import InMemoryImages  # noqa: E402
from eupe.distill.loss import distillation_loss  # noqa: E402
from eupe.distill.trainer import Distiller  # noqa: E402
from eupe.models import VisionTransformer  # noqa: E402
from eupe.teachers.common import finalise  # noqa: E402
from eupe.teachers.eupe_teacher import BackboneTeacher  # noqa: E402


def vit(dim: int, depth: int, heads: int, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, n_storage_tokens=4, mask_k_bias=True,
                             layerscale_init=1e-5, norm_layer="layernormbf16")


def center_crop(size: int):
    def augment(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return image[:, :size, :size].float() / 255
    return augment


def make(out: Path, *, size: int, batch: int, n_images: int, teacher_dim: int, teacher_depth: int, iterations: int,
         cache: bool = False, extra: tuple[str, ...] = ("train.amp=fp32",)) -> Distiller:
    overrides = [
        "student.model=eupe_vitt16", "student.arch={depth: 4}", "student.head_hidden_dim=384",
        f"data.augment.size={size}", f"data.student_scales=[{size}]", f"train.global_batch_size={batch}",
        f"train.iterations={iterations}", "train.norm_iterations=2", "train.device=cpu", *extra,
        f"output.dir={out}", "output.progress=false", "output.tensorboard=false", "output.checkpoint_every=100000",
        f"cache.enabled={str(cache).lower()}", "cache.views_per_image=1", f"cache.batch_size={batch}",
    ]
    cfg = load_config(DistillConfig, None, overrides)
    teacher = finalise(BackboneTeacher("teacher", vit(teacher_dim, teacher_depth, teacher_dim // 64, seed=1),
                                       input_size=size))
    images = [(torch.rand(3, size, size) * 255).to(torch.uint8) for _ in range(n_images)]
    return Distiller(cfg, teachers=[teacher], primary=InMemoryImages(images, center_crop(size)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_overhead(tmp: Path, rounds: int, size: int, batch: int, compiled: bool = False) -> None:
    """The full step against its parts; ``compiled``: with ``student.compile`` (the parts then run the compiled
    student too)."""
    d = make(tmp / f"overhead_{compiled}", size=size, batch=batch, n_images=4 * batch, teacher_dim=384,
             teacher_depth=6, iterations=10_000, extra=("train.amp=fp32", f"student.compile={str(compiled).lower()}"))
    d.measure_normalization()
    d.student.train()
    views = d.stream.next_batch(0).images
    teacher = d.teachers[0]

    def teacher_fwd():
        teacher(views)

    targets = {"teacher": d.normalizer("teacher", teacher(views))}

    def student_fwd_bwd():
        loss, _ = distillation_loss(d.model(views), targets, d.cfg.loss)
        loss.backward()

    def optimizer_step():
        d.optimizer.step()

    step = [0]

    def full_step():
        d.train_step(step[0])
        step[0] += 1

    for _ in range(3 if compiled else 1):  # warm-up (allocations, lazy inits, compilation)
        full_step()
    parts, fulls = [], []
    for _ in range(rounds):
        t = timed(teacher_fwd)
        d.optimizer.zero_grad(set_to_none=True)
        s = timed(student_fwd_bwd)
        o = timed(optimizer_step)
        d.optimizer.zero_grad(set_to_none=True)
        parts.append((t, s, o))
        fulls.append(timed(full_step))
    t, s, o = (statistics.median(p[i] for p in parts) for i in range(3))
    full = statistics.median(fulls)
    label = "overhead compiled" if compiled else "overhead"
    print(f"[{label}] batch {batch} @ {size}px: teacher fwd {t * 1e3:.1f} ms, student fwd+bwd {s * 1e3:.1f} ms, "
          f"optimizer {o * 1e3:.1f} ms; sum {(t + s + o) * 1e3:.1f} ms; full step {full * 1e3:.1f} ms; "
          f"ratio {full / (t + s + o):.3f} (target <= 1.15)")


def bench_cache(tmp: Path, size: int, batch: int, n_images: int) -> None:
    steps = n_images // batch
    start = time.perf_counter()
    d = make(tmp / "cache", size=size, batch=batch, n_images=n_images, teacher_dim=768, teacher_depth=24,
             iterations=2 * steps, cache=True)
    d.measure_normalization()
    d.student.train()
    build = time.perf_counter() - start
    epoch1 = build + sum(timed(lambda i=i: d.train_step(i)) for i in range(steps))
    epoch2 = sum(timed(lambda i=i: d.train_step(i)) for i in range(steps, 2 * steps))
    teacher_cost = timed(lambda: d.teachers[0](d.stream.sources[0].view(0, 0, 0)[None].expand(batch, -1, -1, -1)))
    student_cost = epoch2 / steps
    print(f"[cache] {n_images} images, batch {batch}: epoch 1 (teacher + cache + train) {epoch1:.1f} s, epoch 2 "
          f"(from cache) {epoch2:.1f} s, speed-up {epoch1 / epoch2:.1f}x (target >= 3x); teacher/student step cost "
          f"{teacher_cost / student_cost:.1f}x")


def bench_memory(tmp: Path, size: int, batch: int) -> None:
    d = make(tmp / "memory", size=size, batch=batch, n_images=2 * batch, teacher_dim=384, teacher_depth=6,
             iterations=3)
    d.run()
    summary = (tmp / "memory" / "summary.json").read_text()
    print(f"[memory] small run (ViT-T/4 student, ViT-S/6 teacher, batch {batch} @ {size}px): {summary.strip()}")


def bench_data(tmp: Path, batch: int, workers: int, steps: int = 6) -> None:
    from gpu_check import write_images

    from eupe.distill.data import ViewStream
    from eupe.distill.sources import build_view_sources

    write_images(tmp / "jpegs", 4 * batch)
    source, _ = build_view_sources(load_config(DistillConfig, None, [f"data.source={tmp / 'jpegs'}"]).data)
    for n in (0, workers):
        stream = ViewStream(source, batch, workers=n)
        first = timed(lambda s=stream: s.next_batch(0))
        rest = sum(timed(lambda i=i, s=stream: s.next_batch(i)) for i in range(1, steps + 1))
        stream.close()
        print(f"[data] workers={n}: first batch after {first:.2f} s, then {steps * batch / rest:.0f} views/s "
              f"(batch {batch}, 256 px JPEG crops)")


def bench_variants(tmp: Path, rounds: int, size: int, batch: int, warmup: int = 3) -> None:
    """Each variant against its eager fp32 twin, interleaved; the step index (so each step's random scale) is the
    same for every variant. Stage 3's scales change every step: the compiled model meets each shape in its
    warm-up, then runs the graphs it compiled for them (or one dynamic-shape graph)."""
    scales = f"data.student_scales=[{size - 16}, {size}, {size + 16}]"
    variants = {f"{'compiled' if compiled else 'eager'} {amp}": (f"student.compile={str(compiled).lower()}",
                                                                 f"train.amp={amp}")
                for amp in ("fp32", "bf16") for compiled in (False, True)}
    variants.update({
        "eager fp32, 3 scales": ("student.compile=false", "train.amp=fp32", scales),
        "compiled fp32, 3 scales": ("student.compile=true", "train.amp=fp32", scales),
        "eager fp32, grad checkpointing": ("student.compile=false", "train.amp=fp32",
                                           "student.grad_checkpointing=true"),
        "compiled fp32, grad checkpointing": ("student.compile=true", "train.amp=fp32",
                                              "student.grad_checkpointing=true"),
    })
    steps = {name: 3 * warmup if "scales" in name else warmup for name in variants}
    runs = {}
    for name, extra in variants.items():
        d = make(tmp / name.replace(" ", "_").replace(",", ""), size=size, batch=batch, n_images=4 * batch,
                 teacher_dim=384, teacher_depth=6, iterations=10_000, extra=extra)
        d.measure_normalization()
        d.student.train()
        compile_s = sum(timed(lambda i=i, d=d: d.train_step(i)) for i in range(steps[name]))
        runs[name] = (d, [steps[name]], [], compile_s)
    for _ in range(rounds):
        for d, step, times, _ in runs.values():
            times.append(timed(lambda d=d, s=step[0]: d.train_step(s)))
            step[0] += 1
    for name, (_, _, times, warm) in runs.items():
        baseline = "eager fp32" + name.split("fp32", 1)[1] if "fp32" in name else "eager fp32"
        median, base = statistics.median(times), statistics.median(runs[baseline][2])
        print(f"[variants] {name}: {median * 1e3:.1f} ms/step ({base / median:.2f}x {baseline}); first "
              f"{steps[name]} steps incl. compilation {warm:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cache-images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="data worker processes for the data benchmark")
    parser.add_argument("--only", default="overhead,overhead_compiled,cache,memory,data,variants",
                        help="comma-separated sections to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections = {
        "overhead": lambda tmp: bench_overhead(tmp, args.rounds, args.size, args.batch),
        "overhead_compiled": lambda tmp: bench_overhead(tmp, args.rounds, args.size, args.batch, compiled=True),
        "cache": lambda tmp: bench_cache(tmp, args.size, args.batch, args.cache_images),
        "memory": lambda tmp: bench_memory(tmp, args.size, args.batch),
        "data": lambda tmp: bench_data(tmp, 4 * args.batch, args.workers),
        "variants": lambda tmp: bench_variants(tmp, args.rounds, args.size, args.batch),
    }
    chosen = args.only.split(",")
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; choose from {sorted(sections)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            sections[name](Path(tmp))


if __name__ == "__main__":
    main()
