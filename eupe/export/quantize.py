"""Checks that an int8 model (``eupe.models.int8``) still gives the fp32 model's features on real photos."""

from __future__ import annotations

from torch import nn

from .verify import VerificationReport, sample_images, similarity_check


def verify_quantized(
    model: nn.Module, quantized: nn.Module, *, size: int = 256, threshold: float = 0.99, count: int = 4
) -> VerificationReport:
    """Cosine similarity of the quantised model's class/patch tokens with the fp32 model's on real photos."""

    def tokens(m: nn.Module):
        def run(x):
            f = m.forward_features(x)
            return f["x_norm_clstoken"], f["x_norm_patchtokens"]
        return run

    return similarity_check(tokens(model), tokens(quantized), sample_images(size, count), threshold=threshold,
                            label="torch int8")
