"""``eupe export``: write a backbone as ONNX, ExecuTorch, TorchScript, torch.export, safetensors or a transformers
folder, verified against eager PyTorch right after export."""

from __future__ import annotations

import argparse
import logging

from ..export import FORMATS, export_model, load_for_export
from ..export.onnx import DEFAULT_OPSET


def parse_size(text: str) -> tuple[int, int]:
    """``256`` or ``224x320`` (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"size must look like 256 or 224x320, got {text!r}")
    return (parts[0], parts[-1])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model for deployment", description=__doc__)
    parser.add_argument("model", help="registered model name (see `eupe models`)")
    parser.add_argument("--weights", default=None,
                        help="checkpoint (.pt/.pth/.safetensors, URL, hf://...), a transformers DINOv3ViT folder, "
                        "or 'random' (default: the released weights)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    parser.add_argument("--output", required=True, help="output file (hf: output folder)")
    parser.add_argument("--size", type=parse_size, default=(256, 256),
                        help="example/verification input size, 256 or HxW, a multiple of the stride (default 256)")
    parser.add_argument("--storage-tokens", action="store_true", help="also output the storage (register) tokens")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--onnx-exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch.onnx exporter (dynamo needs onnxscript; torchscript is faster to run)")
    parser.add_argument("--int8", action="store_true", help="onnx: also write a dynamically quantised int8 model")
    parser.add_argument("--optimize", action="store_true",
                        help="onnx: fuse attention and bias + GELU into onnxruntime contrib ops "
                             "(faster in onnxruntime; other runtimes cannot read the file)")
    parser.add_argument("--batch", type=int, default=1, help="executorch: the program's fixed batch size")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the parity checks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in ("onnx_ir", "onnxscript", "torch.onnx"):  # their INFO chatter drowns the export's own report
        logging.getLogger(name).setLevel(logging.WARNING)
    model = load_for_export(args.model, args.weights)
    result = export_model(model, args.fmt, args.output, size=args.size, storage_tokens=args.storage_tokens,
                          verify=args.verify, model_name=args.model, opset=args.opset,
                          onnx_exporter=args.onnx_exporter, int8=args.int8, batch=args.batch,
                          optimize=args.optimize)
    for path in result.paths:
        print(f"wrote {path}")
    if result.report.checks:
        print(result.report)
    return 0
