"""Evaluation protocols of the paper on frozen backbones (one module or subpackage per protocol).

Every protocol runs as ``run_<protocol>(backbone: EvalBackbone, config, output_dir) -> dict`` and writes its
resolved ``config.yaml`` and results into ``output_dir``.
"""

from .backbone import EvalBackbone

__all__ = ["EvalBackbone"]
