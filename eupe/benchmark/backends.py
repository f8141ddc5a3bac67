"""Inference backends to compare: each turns a backbone into ``run(x) -> outputs`` for one input shape.

Every backend computes the same thing, the class and patch tokens of :class:`~eupe.export.FeatureOutputs`, so
their timings are comparable. Optional backends report why they are unavailable instead of failing.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..export.prepare import FeatureOutputs
from ..utils.optional import available, install_hint

Runner = Callable[[Tensor], object]
# timm's implementation of the same architectures, for an optional comparison column.
TIMM_EQUIVALENTS = {
    "eupe_vits16": "vit_small_patch16_dinov3", "eupe_vitb16": "vit_base_patch16_dinov3",
    "vitl16": "vit_large_patch16_dinov3", "eupe_convnext_tiny": "convnext_tiny",
    "eupe_convnext_small": "convnext_small", "eupe_convnext_base": "convnext_base",
}


@dataclass
class BuildContext:
    """What a backend may need besides the model: its name, a scratch folder and the thread count; and the
    runners already built for this model (reused across sizes and batches unless built per shape)."""

    model_name: str
    workdir: Path
    threads: int = 0
    onnx_exporter: str = "dynamo"  # as `eupe export`
    runners: dict[str, Runner] = field(default_factory=dict)


@dataclass(frozen=True)
class Backend:
    name: str
    device: str
    build: Callable[[nn.Module, Tensor, BuildContext], Runner]
    requires: tuple[str, ...] = ()
    description: str = ""
    per_shape: bool = False  # the artefact fixes the input shape: build it again for every size and batch

    def runner(self, model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
        """The runner for ``example``'s shape: built once per model (converted weights, exported files) unless
        ``per_shape``."""
        if self.per_shape:
            return self.build(model, example, ctx)
        if self.name not in ctx.runners:
            ctx.runners[self.name] = self.build(model, example, ctx)
        return ctx.runners[self.name]

    def unavailable_reason(self) -> str | None:
        if self.device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        missing = [m for m in self.requires if not available(m, import_it=False)]
        if missing:
            top = missing[0].split(".")[0]
            return f"needs {top}: {install_hint(top)}"
        return None


def _inference(module: nn.Module) -> Runner:
    def run(x: Tensor) -> object:
        with torch.inference_mode():
            return module(x)
    return run


def _eager(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    return _inference(FeatureOutputs(model).eval())


def _eager_bf16(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    module = FeatureOutputs(copy.deepcopy(model).to(torch.bfloat16)).eval()
    return lambda x: _inference(module)(x.to(torch.bfloat16))


def _compiled(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    # Inductor's freezing makes the weights constants of the graph (pre-packed matrix products, folded constants):
    # the setting PyTorch recommends for CPU inference.
    return _inference(torch.compile(FeatureOutputs(model).eval(), dynamic=False, options={"freezing": True}))


def _torch_int8(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    from ..models.int8 import quantize_int8

    return _inference(FeatureOutputs(quantize_int8(model)).eval())


def _onnx_file(model: nn.Module, example: Tensor, ctx: BuildContext, optimize: bool = True) -> Path:
    """One dynamic-shape fp32 ONNX export per model and flavour (onnxruntime-optimised or portable), shared by
    every size and batch (and by the int8 backend)."""
    from ..export.onnx import export_onnx

    path = ctx.workdir / f"{ctx.model_name}{'.ort' if optimize else ''}.onnx"
    if not path.exists():
        export_onnx(model, path, size=tuple(example.shape[2:]), exporter=ctx.onnx_exporter,  # type: ignore[arg-type]
                    verify=True, model_name=ctx.model_name, optimize=optimize)
    return path


def _onnxruntime(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    from ..export.onnx import OnnxRunner

    return OnnxRunner(_onnx_file(model, example, ctx), threads=ctx.threads or None, spinning=False)


def _onnxruntime_portable(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    from ..export.onnx import OnnxRunner

    return OnnxRunner(_onnx_file(model, example, ctx, optimize=False), threads=ctx.threads or None, spinning=False)


def _onnxruntime_int8(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    from ..export.onnx import OnnxRunner, int8_path_for, quantize_onnx_int8

    fp32 = _onnx_file(model, example, ctx)
    int8 = int8_path_for(fp32)
    if not int8.exists():
        quantize_onnx_int8(fp32, int8)
    return OnnxRunner(int8, threads=ctx.threads or None, spinning=False)


def _executorch(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    from ..export.executorch import ExecuTorchRunner, export_executorch

    b, _, h, w = example.shape
    path = ctx.workdir / f"{ctx.model_name}_{b}x{h}x{w}.pte"
    export_executorch(model, path, size=(h, w), batch=b, verify=False)
    return ExecuTorchRunner(path)


def _on_cuda(model: nn.Module) -> nn.Module:
    return FeatureOutputs(copy.deepcopy(model).cuda()).eval()


def _cuda_runner(module: nn.Module | Callable[[Tensor], object], bf16: bool) -> Runner:
    def run(x: Tensor) -> object:  # x is already on the GPU (inputs are made on each backend's device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            return module(x)
    return run


def _cuda_fp32(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    return _cuda_runner(_on_cuda(model), bf16=False)


def _cuda_bf16(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    return _cuda_runner(_on_cuda(model), bf16=True)


def _cuda_compile_bf16(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    return _cuda_runner(torch.compile(_on_cuda(model), dynamic=False), bf16=True)


def _timm(model: nn.Module, example: Tensor, ctx: BuildContext) -> Runner:
    import timm

    name = TIMM_EQUIVALENTS.get(ctx.model_name)
    if name is None:
        raise ValueError(f"No timm equivalent registered for {ctx.model_name}")
    timm_model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    return _inference(timm_model.forward_features)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("eager", "cpu", _eager, description="PyTorch eager fp32"),
    Backend("eager-bf16", "cpu", _eager_bf16, description="PyTorch eager, weights and activations in bf16"),
    Backend("compile", "cpu", _compiled, description="torch.compile (inductor, frozen weights) fp32"),
    Backend("torch-int8", "cpu", _torch_int8, description="eupe.models.int8.quantize_int8 (dynamic int8 Linear)"),
    Backend("onnxruntime", "cpu", _onnxruntime, ("onnx", "onnxruntime", "onnxscript"),
            "ONNX Runtime fp32, onnxruntime-optimised export (fused attention and GELU)"),
    Backend("onnxruntime-portable", "cpu", _onnxruntime_portable, ("onnx", "onnxruntime", "onnxscript"),
            "ONNX Runtime fp32, portable export (standard ONNX ops only)"),
    Backend("onnxruntime-int8", "cpu", _onnxruntime_int8,
            ("onnx", "onnxruntime", "onnxruntime.quantization", "onnxscript"),
            "ONNX Runtime, dynamic int8 of the onnxruntime-optimised export"),
    Backend("executorch", "cpu", _executorch, ("executorch.exir", "executorch.runtime"),
            "ExecuTorch + XNNPACK fp32 (one program per shape)", per_shape=True),
    Backend("cuda", "cuda", _cuda_fp32, description="PyTorch eager on CUDA, fp32"),
    Backend("cuda-bf16", "cuda", _cuda_bf16, description="PyTorch eager on CUDA with bf16 autocast"),
    Backend("cuda-compile-bf16", "cuda", _cuda_compile_bf16,
            description="torch.compile (inductor) on CUDA with bf16 autocast"),
    Backend("timm", "cpu", _timm, ("timm",), "timm's implementation of the same architecture (random weights)"),
)}


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="eupe-bench-")
