"""ExecuTorch ``.pte`` export with the XNNPACK delegate (the paper's on-device path, Table 11).

ExecuTorch programs have static shapes here: the file is built for one input size and batch, as mobile
runtimes are. Verified with the ExecuTorch Python runtime against eager PyTorch at that size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..utils.io import atomic_path
from ..utils.optional import require
from .prepare import check_size, export_ready
from .verify import VerificationReport, verify_export

PURPOSE = "ExecuTorch export"


class ExecuTorchRunner:
    """Runs a ``.pte`` file's ``forward`` with the ExecuTorch Python runtime: ``runner(x) -> list of tensors``."""

    def __init__(self, path: str | Path) -> None:
        runtime = require("executorch.runtime", "Running ExecuTorch programs").Runtime.get()
        self.method = runtime.load_program(str(path)).load_method("forward")

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.method.execute([x.contiguous()]))


def export_executorch(
    model: nn.Module, output: str | Path, *, size: tuple[int, int] = (256, 256), batch: int = 1,
    storage_tokens: bool = False, verify: bool = True, atol: float = 1e-4,
) -> VerificationReport:
    """Lowers ``model`` to an XNNPACK-delegated ExecuTorch program for ``batch x 3 x size`` inputs."""
    exir = require("executorch.exir", PURPOSE)
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", PURPOSE)
    check_size(model, *size)
    wrapper = export_ready(model, storage_tokens=storage_tokens)
    example = torch.randn(batch, 3, *size)
    program = torch.export.export(wrapper, (example,))
    lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
    buffer = lowered.to_executorch().buffer
    with atomic_path(output) as tmp:
        tmp.write_bytes(buffer)
    if not verify:
        return VerificationReport()
    return verify_export(model, ExecuTorchRunner(output), [size], what=f"ExecuTorch program {output}",
                         label="executorch xnnpack", storage_tokens=storage_tokens, atol=atol, batch=batch)
