"""Frozen teachers behind one interface: a batch of images in, a summary vector and a patch-feature grid out.

``build_teacher(TeacherSpec(kind=..., ...))`` builds any kind (see ``KINDS``): this package's own backbones
(``eupe``), ``timm``/``open_clip``/``hf`` models (optional dependencies), any torch CNN (``torch_cnn``) and the
real offline teachers EfficientNet-Lite2, MobileNetV2 and HED. To wrap a CNN object you already hold, use
``finalise(FeatureMapTeacher(name, network, input_size=...))``.
"""

from .base import Teacher, TeacherOutput
from .common import MissingTeacherDependency, TeacherError, finalise
from .eupe_teacher import BackboneTeacher
from .factory import KINDS, build_teacher, build_teachers
from .feature_map import FeatureMapTeacher
from .spec import TeacherSpec

__all__ = ["KINDS", "BackboneTeacher", "FeatureMapTeacher", "MissingTeacherDependency", "Teacher", "TeacherError",
           "TeacherOutput", "TeacherSpec", "build_teacher", "build_teachers", "finalise"]
