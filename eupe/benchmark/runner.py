"""The benchmark loop: models x sizes x batch sizes x backends, warmed up, timed in interleaved rounds."""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..utils.logs import quiet
from .backends import BACKENDS, BuildContext, Runner, scratch_dir
from .measure import gflops_per_image, peak_memory, synchronize

logger = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    """What ``eupe bench`` measures (YAML file and/or ``key=value`` overrides)."""

    models: list[str] = field(default_factory=lambda: ["eupe_vits16"])
    sizes: list[int] = field(default_factory=lambda: [256])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    backends: list[str] = field(default_factory=lambda: ["eager", "onnxruntime", "onnxruntime-int8"])
    warmup: int = 3  # untimed calls per backend and shape (torch.compile compiles here)
    rounds: int = 10  # timed rounds; each round calls every backend once, in a rotating order
    iters: int = 1  # calls per timed sample (raise for very fast models)
    threads: int = 0  # intra-op threads for torch and ONNX Runtime; 0 keeps the libraries' defaults
    weights: str = "random"  # weights do not change speed; 'random' needs no download
    depth: int = 0  # >0 overrides the depth of ViTs (smoke tests); 0 keeps the real architecture
    onnx_exporter: str = "dynamo"
    output_dir: str = "bench_results"
    seed: int = 0


@dataclass
class BenchResult:
    model: str
    size: int
    batch: int
    backend: str
    times_ms: list[float] = field(repr=False, default_factory=list)
    gflops_per_image: float = float("nan")
    peak_mem_mib: float = float("nan")
    peak_mem_note: str = ""  # why peak_mem_mib is NaN for a backend that ran
    error: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def spread_ms(self) -> tuple[float, float]:
        """Interquartile range of the timed rounds (25th and 75th percentiles)."""
        if len(self.times_ms) < 2:
            return (self.median_ms, self.median_ms)
        q = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return (q[0], q[2])

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms if self.times_ms else float("nan")


def validate(cfg: BenchConfig) -> None:
    unknown = [b for b in cfg.backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"Unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    if not cfg.models or not cfg.sizes or not cfg.batch_sizes or not cfg.backends:
        raise ValueError("models, sizes, batch_sizes and backends must each list at least one entry")
    if min(cfg.sizes) <= 0 or min(cfg.batch_sizes) <= 0 or cfg.rounds <= 0 or cfg.iters <= 0 or cfg.warmup < 0:
        raise ValueError("sizes, batch_sizes, rounds and iters must be positive and warmup non-negative")
    if cfg.threads < 0 or cfg.depth < 0:
        raise ValueError(f"threads ({cfg.threads}) and depth ({cfg.depth}) must be >= 0 (0: the default)")


def build_model(name: str, cfg: BenchConfig) -> nn.Module:
    """The registered model ``name`` with ``cfg.weights`` (and ``cfg.depth`` for ViTs, when set)."""
    from ..export import load_for_export
    from ..models import VisionTransformer, get_model_entry

    is_vit = get_model_entry(name).builder is VisionTransformer
    overrides = {"depth": cfg.depth} if cfg.depth and is_vit else {}
    return load_for_export(name, cfg.weights, **overrides).eval()


def _time_call(run: Runner, x: torch.Tensor, iters: int, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        run(x)
    synchronize(device)
    return (time.perf_counter() - start) * 1000.0 / iters


def run_benchmark(cfg: BenchConfig, models: dict[str, nn.Module] | None = None) -> list[BenchResult]:
    """Measures every combination; ``models`` (name -> module) replaces building them from ``cfg.models``.

    Backends that are unavailable or fail to build get a result with ``error`` set and no timings.
    """
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    results: list[BenchResult] = []
    with scratch_dir() as tmp:
        for name in (list(models) if models else cfg.models):
            model = models[name] if models else build_model(name, cfg)
            _check_sizes(name, model, cfg.sizes)
            ctx = BuildContext(name, Path(tmp), cfg.threads, cfg.onnx_exporter)
            for size in cfg.sizes:
                gflops = gflops_per_image(model, size)
                for batch in cfg.batch_sizes:
                    results.extend(_bench_shape(model, ctx, cfg, size, batch, gflops))
    return results


def _check_sizes(name: str, model: nn.Module, sizes: list[int]) -> None:
    """Refuses a size the model would crop (pixels past the last full token are dropped): the table would name a
    size that was not measured."""
    stride = getattr(model, "feature_stride", 1)
    odd = [s for s in sizes if s % stride]
    if odd:
        fixes = ", ".join(f"{s} -> {max(stride, s - s % stride)} or {s - s % stride + stride}" for s in odd)
        raise ValueError(f"sizes {odd} are not multiples of {name}'s token stride {stride}: it would drop the pixels "
                         f"past the last full token and measure a smaller input; use {fixes}")


def _bench_shape(model: nn.Module, ctx: BuildContext, cfg: BenchConfig, size: int, batch: int,
                 gflops: float) -> list[BenchResult]:
    x_cpu = torch.randn(batch, 3, size, size)
    ready: dict[str, tuple[Runner, torch.Tensor]] = {}
    results = {b: BenchResult(ctx.model_name, size, batch, b, gflops_per_image=gflops) for b in cfg.backends}
    for name in tqdm(cfg.backends, desc=f"preparing backends for {ctx.model_name} {size}px b{batch}", leave=False,
                     disable=None):
        backend = BACKENDS[name]
        reason = backend.unavailable_reason()
        if reason:
            results[name].error = reason
            continue
        try:
            x = x_cpu.to(backend.device)
            # Exporters and optimizers log every rewrite and warn about their own internals; failures still raise.
            with quiet(logging.WARNING), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = backend.runner(model, x, ctx)
            # The first call allocates the backend's working memory: that is when its peak is visible.
            results[name].peak_mem_mib, results[name].peak_mem_note = peak_memory(run, x)
            for _ in range(cfg.warmup):
                run(x)
            synchronize(backend.device)
            ready[name] = (run, x)
        except Exception as err:  # noqa: BLE001 - one broken backend must not abort the whole benchmark
            logger.warning("backend %s failed for %s at %dx%d batch %d: %s", name, ctx.model_name, size, size,
                           batch, err)
            results[name].error = f"{type(err).__name__}: {err}"[:200]
    order = list(ready)
    for r in tqdm(range(cfg.rounds), desc=f"{ctx.model_name} {size}px b{batch}", leave=False, disable=None):
        shift = r % max(1, len(order))
        for name in order[shift:] + order[:shift]:  # rotate so no backend always runs first or last
            run, x = ready[name]
            results[name].times_ms.append(_time_call(run, x, cfg.iters, BACKENDS[name].device))
    return list(results.values())
