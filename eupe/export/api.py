"""One entry point for every export format: ``export_model(model, format, output, ...)``.

The output location is checked before the (slow) export starts, and a write that fails on the way (full disk,
denied) is one clear error naming the folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from torch import nn

from ..loading import load
from ..models import get_model_entry
from ..utils.io import remove_stale_temporaries
from ..utils.optional import available, install_hint
from ..utils.outputs import OutputDirError, locked_output_dir, write_error
from .prepare import ExportError
from .verify import VerificationReport

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "executorch", "torchscript", "pt2", "safetensors", "hf")


@dataclass
class ExportResult:
    """The files an export wrote and the checks they passed."""

    format: str
    paths: list[Path] = field(default_factory=list)
    report: VerificationReport = field(default_factory=VerificationReport)


def load_for_export(name: str, weights: str | os.PathLike | None, **overrides) -> nn.Module:
    """Model ``name`` with ``weights``: a checkpoint/URL/``hf://`` reference, a transformers DINOv3ViT folder,
    ``"random"`` (untrained, for testing a pipeline) or ``None`` (the released weights)."""
    if weights is not None and Path(weights).is_dir():
        from .hf import load_hf

        model = load_hf(weights)
        arch = {**get_model_entry(name).arch, **overrides}
        if (model.embed_dim, len(model.blocks)) != (arch.get("embed_dim"), arch.get("depth")):
            raise ExportError(f"The transformers folder {weights} holds a {model.embed_dim}-wide, {len(model.blocks)}"
                              f"-block ViT, not {name}; pass the matching model name.")
        return model
    random_init = weights == "random"
    return load(name, None if random_init else weights, pretrained=not random_init, **overrides)


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | Path,
    *,
    size: tuple[int, int] = (256, 256),
    storage_tokens: bool = False,
    verify: bool = True,
    model_name: str = "",
    opset: int | None = None,
    onnx_exporter: str = "dynamo",
    int8: bool = False,
    batch: int = 1,
    optimize: bool = False,
) -> ExportResult:
    """Exports ``model`` as ``fmt`` (one of :data:`FORMATS`) to ``output`` and verifies it (unless ``verify=False``).

    ``int8`` (onnx only) also writes ``<output>.int8.onnx`` and checks its class-token cosine on real photos;
    ``batch`` is the fixed batch of ExecuTorch programs (the other formats have a dynamic batch); ``optimize``
    (onnx only) writes an onnxruntime-specific file with fused attention and GELU contrib ops.
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if optimize and fmt != "onnx":
        raise ExportError(f"--optimize applies to --format onnx only (got {fmt}).")
    if batch < 1:
        raise ExportError(f"--batch must be a positive number of images, got {batch}.")
    if int8 and fmt != "onnx":
        raise ExportError(f"--int8 applies to --format onnx only (got {fmt}); for PyTorch int8 use "
                          "eupe.models.int8.quantize_int8.")
    output = Path(output)
    _require_writable(output, folder=fmt == "hf")  # first: an output that cannot be written at all says so
    _require_space(model, output if fmt == "hf" else output.parent)
    with _writing(output, folder=fmt == "hf"):
        result = ExportResult(fmt, [output])
        common = dict(size=size, storage_tokens=storage_tokens, verify=verify)
        if fmt == "onnx":
            from .onnx import DEFAULT_OPSET, export_onnx, int8_path_for, quantize_onnx_int8, verify_int8

            result.report = export_onnx(model, output, opset=opset or DEFAULT_OPSET,
                                        exporter=onnx_exporter,  # type: ignore[arg-type]
                                        model_name=model_name, optimize=optimize, **common)
            if int8:
                int8_path = quantize_onnx_int8(output, int8_path_for(output))
                result.paths.append(int8_path)
                if verify:
                    check = verify_int8(model, int8_path, size=min(size), storage_tokens=storage_tokens)
                    check.raise_if_failed(f"int8 ONNX file {int8_path}")
                    result.report.checks.extend(check.checks)
        elif fmt == "executorch":
            from .executorch import export_executorch

            result.report = export_executorch(model, output, batch=batch, **common)
        elif fmt == "torchscript":
            from .program import export_torchscript

            result.report = export_torchscript(model, output, **common)
        elif fmt == "pt2":
            from .program import export_program

            result.report = export_program(model, output, **common)
        elif fmt == "safetensors":
            from .convert import model_to_safetensors

            result.report = model_to_safetensors(model, output, model_name=model_name)
        else:  # hf
            from .hf import save_hf, verify_hf

            save_hf(model, output)
            result.paths = sorted(p for p in output.iterdir() if p.suffix in (".json", ".safetensors"))
            if verify and available("transformers"):
                result.report = verify_hf(model, output, size=size)
            elif verify:
                logger.warning("transformers is not installed: %s was written but not checked against "
                               "DINOv3ViTModel (install it to verify: %s)", output, install_hint("transformers"))
    for path in result.paths:
        logger.info("wrote %s", path)
    return result


def _nearest_existing(where: Path) -> Path:
    return next(p for p in (where, *where.parents) if p.exists())


def _require_writable(output: Path, *, folder: bool) -> None:
    """Refuses, creating nothing, an output of the wrong kind (a file where a ``folder`` is due, or the reverse)
    or whose folder (or its nearest existing parent) cannot be written."""
    if folder and output.exists() and not output.is_dir():
        raise ExportError(f"output {output} is a file, but this format writes a folder: give a folder path")
    if not folder and output.is_dir():
        raise ExportError(f"output {output} is a folder, but this format writes a file: give a file path")
    where = output if folder else output.parent
    try:
        tempfile.TemporaryFile(dir=_nearest_existing(where)).close()
    except OSError as err:
        raise _cannot_write(output, where, err) from None


def _cannot_write(output: Path, where: Path, err: OSError) -> ExportError:
    return ExportError(f"Cannot write output {output}: {err.strerror or err} ({err.filename or where}); "
                       "choose a writable location")


def _require_space(model: nn.Module, where: Path) -> None:
    """Refuses an export whose weights alone do not fit in the free space at ``where``, before exporting: some
    writers (TorchScript's) abort the whole process on a full disk instead of raising an error."""
    needed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    free = shutil.disk_usage(_nearest_existing(where)).free
    if free < needed:
        raise OutputDirError(f"no space left on device for the export to {where}: the weights alone need "
                             f"{needed / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free; free some space or "
                             "choose another location")


@contextlib.contextmanager
def _writing(output: Path, *, folder: bool) -> Iterator[None]:
    """Creates ``output``'s folder (checked by :func:`_require_writable` first), then turns a write failure of
    the block (full disk, denied) into one error naming the folder. An output folder is locked for the block (a
    second export into it is refused) and cleared of the partial files of a killed export."""
    if folder:
        with locked_output_dir(output, "eupe export"):
            remove_stale_temporaries(output)
            yield
        return
    where = output.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(output, where, err) from None
    try:
        yield
    except Exception as err:
        converted = write_error(where, err)
        if converted is None:
            raise
        raise converted from err
