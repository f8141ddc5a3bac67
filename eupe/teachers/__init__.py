"""Frozen teachers behind one interface: a batch of images in, a summary vector and a patch-feature grid out.

``build_teacher(TeacherSpec(kind=..., ...))`` builds any registered kind (``teacher_kinds()``): this package's
own backbones (``eupe``), ``timm``/``open_clip``/``hf`` models (optional dependencies) and any torch CNN
(``torch_cnn``). ``register_teacher(kind, builder)`` adds your own (the CPU demo registers its stand-in CNNs this
way). To wrap a CNN object you already hold, use ``finalise(FeatureMapTeacher(name, network, input_size=...))``.
"""

from .base import Teacher, TeacherOutput
from .common import MissingTeacherDependency, TeacherError, finalise
from .eupe_teacher import BackboneTeacher
from .factory import build_teacher, build_teachers, register_teacher, teacher_kinds
from .feature_map import FeatureMapTeacher
from .spec import TeacherSpec

__all__ = ["BackboneTeacher", "FeatureMapTeacher", "MissingTeacherDependency", "Teacher", "TeacherError",
           "TeacherOutput", "TeacherSpec", "build_teacher", "build_teachers", "finalise", "register_teacher",
           "teacher_kinds"]
