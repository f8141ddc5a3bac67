"""Frozen teachers behind one interface: a batch of images in, a summary vector and a patch-feature grid out."""

from .base import Teacher, TeacherOutput
from .common import MissingTeacherDependency, TeacherError
from .factory import KINDS, build_teacher, build_teachers
from .spec import TeacherSpec

__all__ = ["KINDS", "MissingTeacherDependency", "Teacher", "TeacherError", "TeacherOutput", "TeacherSpec",
           "build_teacher", "build_teachers"]
