"""torch.hub entry points: ``torch.hub.load(REPO_DIR, 'eupe_vits16', source='local', weights=...)``."""

dependencies = ["torch", "numpy", "safetensors"]

from eupe.hub import (  # noqa: E402,F401
    eupe_convnext_base,
    eupe_convnext_small,
    eupe_convnext_tiny,
    eupe_vitb16,
    eupe_vits16,
    eupe_vitt16,
)
