"""``eupe distill``: run one EUPE distillation stage from a shipped config (stage1, stage2, stage3) or a YAML file."""

from __future__ import annotations

import argparse

from .common import add_shipped_config_args, print_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill", help="distil teachers into a student (stage 1, 2 or 3)", description=__doc__,
        epilog="Under torchrun the run is distributed (DDP for students, FSDP2 for the proxy). A rerun with the "
               "same output.dir resumes from its newest checkpoint, with the same settings and weight files: "
               "--set resume.allow_changes=true resumes with other ones and records them in config_changes.jsonl "
               "(logging, checkpoint frequency, data.workers and the folders may always change). One run at a "
               "time writes into an output.dir. The CPU demo of all three stages is `eupe demo`.")
    add_shipped_config_args(parser, "distill", "train.lr=1e-4 --set output.dir=runs/s2")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..distill.config import load_distill_config
    from ..distill.distributed import shutdown_distributed
    from ..distill.trainer import distill

    cfg = load_distill_config(args.config, args.overrides)
    if args.print_config:
        return print_config(cfg)
    try:
        result = distill(cfg)
    finally:
        shutdown_distributed()  # torchrun: release the process group (a no-op in one process)
    if result.export_path is not None:
        print(f"student: {result.export_path}  normalisation statistics: {result.norms_path}  "
              f"final loss: {result.final_loss:.4f}  skipped images: {result.skipped_images}")
    return 0
