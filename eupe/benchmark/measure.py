"""Low-level measurements: GFLOPs per image, peak memory of one call, and a synchronising timer."""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


# torch's counter knows the CUDA attention kernels but not the CPU one, which would drop attention from the count.
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def gflops_per_image(model: nn.Module, size: int, *, batch: int = 1) -> float:
    """Forward GFLOPs for one ``3 x size x size`` image (a multiply-add counts as 2 FLOPs), via FlopCounterMode."""
    x = torch.randn(batch, 3, size, size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / batch / 1e9


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open(_STATM) as f:
        return int(f.read().split()[1]) * _PAGE


class _RssSampler(threading.Thread):
    """Polls the process's resident memory until stopped; keeps the maximum."""

    def __init__(self, interval: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


class PeakMemory(NamedTuple):
    """The extra memory of one call: ``mib`` (NaN when it could not be measured, ``reason`` says why)."""

    mib: float
    reason: str = ""


def peak_memory(run: Callable[[Tensor], object], x: Tensor) -> PeakMemory:
    """Extra memory one ``run(x)`` needs at its peak: CUDA allocator peak on GPU, sampled RSS on CPU.

    The CPU figure is the rise of the process's resident set over its level before the call, sampled every
    millisecond. Memory the process freed earlier but kept (glibc's heap keeps freed pages: a backend run after
    another would reuse them and show no rise) is first handed back to the system with ``malloc_trim``, so the
    call's allocations show; where ``/proc`` is unavailable the figure is NaN with the reason. Measure a backend's
    first call, since allocators keep memory after it. It is never measured during timing.
    """
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run(x)
        torch.cuda.synchronize()
        return PeakMemory((torch.cuda.max_memory_allocated() - base) / 2**20)
    if not os.path.exists(_STATM):
        return PeakMemory(float("nan"), f"no {_STATM} to sample resident memory on this system")
    _release_free_heap()
    base = _rss_bytes()
    sampler = _RssSampler()
    sampler.start()
    try:
        run(x)
    finally:
        peak = sampler.stop()
    return PeakMemory(max(0, peak - base) / 2**20)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (``None`` with another C library)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def _release_free_heap() -> None:
    """Returns the free pages of the C heap to the system, so that reusing them shows in the resident set."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
