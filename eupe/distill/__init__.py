"""EUPE distillation: adapter heads, fixed teacher normalisation, the cosine/smooth-L1 loss with grid alignment,
one training loop for the three stages (DDP/FSDP2, bf16, accumulation, atomic checkpoints and resume), the
teacher-feature cache, the student export, and the CPU demo.

Entry points: :func:`eupe.distill.trainer.distill` (``eupe distill --config stage2``) and
:func:`eupe.distill.demo.run_demo` (``eupe demo``).
"""

from .config import DistillConfig, load_distill_config
from .loss import LossConfig, distillation_loss
from .normalization import TeacherNormalizer
from .student import DistillStudent
from .trainer import Distiller, NonFiniteError, RunResult, distill

__all__ = ["DistillConfig", "DistillStudent", "Distiller", "LossConfig", "NonFiniteError", "RunResult",
           "TeacherNormalizer", "distill", "distillation_loss", "load_distill_config"]
