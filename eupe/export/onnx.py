"""ONNX export with dynamic batch/height/width, onnxruntime parity check and int8 dynamic quantisation.

Two exporters are supported: ``dynamo`` (``torch.export`` + onnxscript, torch's recommended path) and
``torchscript`` (the tracing exporter: faster to run, needs only ``onnx``). Both give dynamic H/W because the
RoPE tables are computed inside the graph from the input's shape (see :mod:`eupe.export.prepare`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..utils.io import atomic_path
from ..utils.logs import quiet
from ..utils.optional import require
from .ort_fusion import (
    apply_transformer_fusions,
    dynamo_translations,
    register_torchscript_symbolic,
    use_fused_attention,
)
from .prepare import (
    INPUT_NAME,
    ExportError,
    check_size,
    dynamic_shapes,
    eager_reference,
    export_ready,
    input_stride,
    verification_sizes,
)
from .verify import VerificationReport, sample_images, similarity_check, verify_export

logger = logging.getLogger(__name__)

Exporter = Literal["dynamo", "torchscript"]
MIN_OPSET = 17
DEFAULT_OPSET = 18


class OnnxRunner:
    """Calls an ONNX file with onnxruntime on CPU: ``runner(x) -> list of numpy outputs``.

    ``spinning=False`` stops idle intra-op threads from busy-waiting: needed when other work (e.g. another
    backend in an interleaved benchmark) shares the cores.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, spinning: bool = True) -> None:
        ort = require("onnxruntime", "Running ONNX models")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:  # idle worker threads otherwise busy-wait and slow down whatever runs next
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: Tensor | np.ndarray) -> list[np.ndarray]:
        array = x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float32)
        return self.session.run(None, {self.input_name: array})


def _export(wrapper: nn.Module, example: Tensor, path: Path, opset: int, exporter: Exporter, dynamic: bool,
            fused_attention: bool) -> None:
    names = dict(input_names=[INPUT_NAME], output_names=wrapper.output_names)
    if exporter == "dynamo":
        require("onnxscript", "ONNX export with the dynamo exporter")
        shapes = dynamic_shapes(input_stride(wrapper), *example.shape[2:]) if dynamic else None
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                    external_data=False, verbose=False,
                                    custom_translation_table=dynamo_translations() if fused_attention else None,
                                    **names)
        program.save(str(path))
    elif exporter == "torchscript":
        if fused_attention:
            register_torchscript_symbolic(opset)
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 1: "tokens"} for name in wrapper.output_names[1:]})
        axes[wrapper.output_names[0]] = {0: "batch"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracing exporter's deprecation and tracer warnings
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes=axes if dynamic else None, do_constant_folding=True, **names)
    else:
        raise ExportError(f"Unknown ONNX exporter {exporter!r}; use 'dynamo' or 'torchscript'.")


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    onnx = require("onnx", "ONNX export")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.save(model, str(path))


def export_onnx(
    model: nn.Module,
    output: str | Path,
    *,
    size: tuple[int, int] = (256, 256),
    opset: int = DEFAULT_OPSET,
    exporter: Exporter = "dynamo",
    dynamic: bool = True,
    storage_tokens: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
    model_name: str = "",
    optimize: bool = False,
) -> VerificationReport:
    """Writes ``model`` as ONNX to ``output`` and checks it with onnxruntime against eager at three sizes.

    Inputs: ``pixel_values [batch, 3, height, width]`` (normalised, height/width multiples of the stride when
    ``dynamic``); outputs ``class_token``, ``patch_tokens`` (and ``storage_tokens``). ``optimize`` writes a
    file tuned for onnxruntime (fused attention and bias + GELU contrib ops; see
    :mod:`eupe.export.ort_fusion`) that other runtimes cannot run. Raises
    :class:`~eupe.export.verify.VerificationError` when the ONNX outputs differ from eager by more than ``atol``.
    """
    require("onnx", "ONNX export")
    if optimize:
        require("onnxruntime", "onnxruntime-optimised ONNX export (--optimize)")
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: RoPE ViTs need opset {MIN_OPSET} or newer.")
    check_size(model, *size)
    wrapper = export_ready(model, storage_tokens=storage_tokens)
    if optimize:
        use_fused_attention(wrapper)
    example = torch.randn(2, 3, *size)
    output = Path(output)
    with atomic_path(output) as tmp:
        _export(wrapper, example, tmp, opset, exporter, dynamic, fused_attention=optimize)
        fused = apply_transformer_fusions(tmp) if optimize else {}
        _add_metadata(tmp, {
            "eupe_model": model_name or type(model).__name__, "input": INPUT_NAME,
            "stride": input_stride(model), "embed_dim": getattr(model, "embed_dim", ""),
            "mean": ",".join(map(str, IMAGENET_MEAN)), "std": ",".join(map(str, IMAGENET_STD)),
            "dynamic_hw": dynamic, "export_size": f"{size[0]}x{size[1]}",
            "runtime": "onnxruntime (com.microsoft contrib ops)" if optimize else "any (standard ONNX)",
        })
    logger.info("wrote %s (%s exporter, opset %d%s)", output, exporter, opset,
                f", onnxruntime fusions {fused}" if optimize else "")
    report = VerificationReport()
    if verify:
        sizes = verification_sizes(size, input_stride(model)) if dynamic else [size]
        report = verify_export(model, OnnxRunner(output), sizes, what=f"ONNX file {output}",
                               label="onnxruntime fp32", storage_tokens=storage_tokens, atol=atol)
    return report


def quantize_onnx_int8(source: str | Path, output: str | Path) -> Path:
    """Dynamic int8 quantisation of an fp32 ONNX file's MatMul/Gemm weights (onnxruntime.quantization)."""
    quant = require("onnxruntime.quantization", "ONNX int8 quantisation")
    output = Path(output)
    with atomic_path(output) as tmp, quiet():  # quiet: one INFO line per tensor
        quant.quantize_dynamic(str(source), str(tmp), weight_type=quant.QuantType.QInt8,
                               op_types_to_quantize=["MatMul", "Gemm"])
    return output


def verify_int8(
    model: nn.Module, int8_path: str | Path, *, size: int = 256, threshold: float = 0.99,
    storage_tokens: bool = False, count: int = 4,
) -> VerificationReport:
    """Cosine similarity of the int8 ONNX model's tokens with fp32 eager on real photos."""
    return similarity_check(eager_reference(model, storage_tokens), OnnxRunner(int8_path), sample_images(size, count),
                            threshold=threshold, label="onnxruntime int8")


def int8_path_for(path: str | Path) -> Path:
    """``model.onnx -> model.int8.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8{path.suffix or '.onnx'}")


__all__ = ["OnnxRunner", "export_onnx", "int8_path_for", "quantize_onnx_int8", "verify_int8"]
