"""Linear probe on frozen features (DINOv2-style), for datasets too small for k-NN to be meaningful.

Features are the class token, optionally concatenated with the mean patch token (``feature_sets`` names
``+``-joined stored keys). One linear head per (feature set, learning rate) is trained at the same time on the
same mini-batches (SGD + momentum, cosine schedule); the head with the best top-1 on a held-out part of the
training set is then scored on the validation set and saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..extract import ExtractConfig, FeatureStore, require_finite
from ..utils.io import atomic_torch_save
from .backbone import EvalBackbone
from .classification import evaluate_predictions, open_labelled_splits, rank_scores
from .results import write_run_outputs

logger = logging.getLogger(__name__)

#: DINOv2's linear-probe learning-rate grid.
DEFAULT_LRS = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]


@dataclass
class LinearConfig:
    """Linear-probe hyper-parameters (every one can be overridden with ``--set linear.<name>=...``)."""

    feature_sets: list[str] = field(default_factory=lambda: ["cls", "cls+patch_mean"])
    learning_rates: list[float] = field(default_factory=lambda: list(DEFAULT_LRS))
    epochs: int = 10
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    holdout_fraction: float = 0.1  # part of train used to choose the head
    seed: int = 0
    topk: list[int] = field(default_factory=lambda: [1, 5])

    def validate(self) -> None:
        if not self.feature_sets or not self.learning_rates:
            raise ValueError("linear probe needs at least one feature set and one learning rate")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if min(self.epochs, self.batch_size) < 1 or not all(math.isfinite(lr) and lr > 0 for lr in self.learning_rates):
            raise ValueError("epochs, batch_size and learning rates must be positive (and finite)")
        if not (math.isfinite(self.momentum) and math.isfinite(self.weight_decay)):
            raise ValueError(f"momentum and weight_decay must be finite, got {self.momentum}, {self.weight_decay}")


@dataclass
class ProbeResult:
    """The sweep (held-out top-1 per head) and the chosen head."""

    sweep: list[dict[str, Any]]
    feature_set: str
    learning_rate: float
    head: nn.Linear


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Random ``(fit, holdout)`` index split of ``n`` items; the holdout gets at least one item."""
    if n < 2:
        raise ValueError(f"The training set has {n} image(s); a linear probe needs at least 2")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(n - 1, max(1, round(n * fraction)))
    return order[k:], order[:k]


def train_linear_probes(
    features: dict[str, Tensor], labels: Tensor, num_classes: int, config: LinearConfig,
    holdout_features: dict[str, Tensor], holdout_labels: Tensor,
) -> ProbeResult:
    """Trains one head per (feature set, lr) on ``features``/``labels`` and picks the best on the holdout.

    ``features`` maps each feature-set name to ``[N, D_set]``. Heads only share the mini-batch order, so each
    ends as if trained alone. Ties between heads go to the first in sweep order (feature sets as given,
    learning rates ascending). A head that diverged (non-finite weights or outputs) has ``holdout_top1`` ``None``
    and ``diverged`` set in the sweep and is never chosen; when all diverge it is a ``ValueError``.
    """
    config.validate()
    for name in features:
        require_finite(features[name], f"linear-probe training features {name!r}")
        require_finite(holdout_features[name], f"linear-probe holdout features {name!r}")
    lrs = sorted(config.learning_rates)
    combos = [(name, lr) for name in features for lr in lrs]
    heads = nn.ModuleList(nn.Linear(features[name].shape[1], num_classes) for name, _ in combos)
    device = labels.device
    with torch.no_grad():  # every head starts from the same seeded init, whatever else is in the sweep
        for head in heads:
            init = torch.Generator().manual_seed(config.seed)
            head.weight.copy_(torch.empty(head.weight.shape).normal_(std=0.01, generator=init))
            head.bias.zero_()
    heads.to(device)
    optimizer = torch.optim.SGD([{"params": h.parameters(), "lr": lr} for h, (_, lr) in zip(heads, combos)],
                                momentum=config.momentum, weight_decay=config.weight_decay)
    n = labels.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            target = labels[idx]
            batch = {name: x[idx] for name, x in features.items()}
            loss = sum(F.cross_entropy(head(batch[name]), target) for head, (name, _) in zip(heads, combos))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    sweep = []
    with torch.no_grad():
        for head, (name, lr) in zip(heads, combos):
            logits = head(holdout_features[name])
            if not torch.isfinite(logits).all():
                logger.warning("linear head (%s, lr %g) diverged (non-finite outputs); it is left out", name, lr)
                sweep.append({"feature_set": name, "learning_rate": lr, "holdout_top1": None, "diverged": True})
                continue
            pred = logits.argmax(1)
            sweep.append({"feature_set": name, "learning_rate": lr,
                          "holdout_top1": 100.0 * (pred == holdout_labels).double().mean().item()})
    usable = [i for i, row in enumerate(sweep) if row["holdout_top1"] is not None]
    if not usable:
        raise ValueError(f"every linear head diverged (non-finite outputs) at learning rates {lrs}; lower "
                         "linear.learning_rates")
    best = max(usable, key=lambda i: (sweep[i]["holdout_top1"], -i))
    return ProbeResult(sweep, combos[best][0], combos[best][1], heads[best])


def build_feature_sets(store: FeatureStore, names: Sequence[str]) -> dict[str, Tensor]:
    """``{"cls+patch_mean": cat(cls, patch_mean)}`` etc.; sets naming keys the store lacks are left out."""
    out = {}
    loaded: dict[str, Tensor] = {}  # each key is read from disk once, however many sets use it
    for name in names:
        keys = name.split("+")
        missing = [k for k in keys if k not in store.keys]
        if missing:
            logger.warning("feature set %r skipped: %s has no %s", name, store.root, ", ".join(missing))
            continue
        for k in keys:
            if k not in loaded:
                loaded[k] = store.load(k).flatten(1)
        out[name] = torch.cat([loaded[k] for k in keys], dim=1)
    if not out:
        raise ValueError(f"None of the feature sets {list(names)} can be built from {store.root} (it holds "
                         f"{', '.join(store.keys)}); set linear.feature_sets to '+'-joined keys it has")
    return out


@dataclass
class LinearRunConfig:
    """A full ``eupe eval linear`` run: inputs, backbone (recorded), extraction and probe settings."""

    data: str | None = None
    train: str | None = None
    val: str | None = None
    model: str | None = None
    weights: str | None = None
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)


def run_linear(backbone: EvalBackbone, config: LinearRunConfig, output_dir: str | Path) -> dict[str, Any]:
    """Features (read or extracted) -> probe sweep -> ``head.pt``, ``config.yaml``, ``results.json/.csv``."""
    config.linear.validate()
    needs_mean = any("patch_mean" in name.split("+") for name in config.linear.feature_sets)
    extract = dataclasses.replace(config.extract, patch_mean=config.extract.patch_mean or needs_mean)
    splits = open_labelled_splits(config.data, config.train, config.val, output_dir=output_dir, backbone=backbone,
                                  extract=extract, protocol="a linear probe")
    train, val, classes, device = splits.train, splits.val, splits.class_names, backbone.device
    train_labels, val_labels = splits.train_labels.to(device), splits.val_labels.to(device)
    train_sets = {k: v.to(device) for k, v in build_feature_sets(train, config.linear.feature_sets).items()}
    fit, hold = holdout_split(len(train_labels), config.linear.holdout_fraction, config.linear.seed)
    fit, hold = fit.to(device), hold.to(device)
    probe = train_linear_probes({k: v[fit] for k, v in train_sets.items()}, train_labels[fit], len(classes),
                                config.linear, {k: v[hold] for k, v in train_sets.items()}, train_labels[hold])
    with torch.no_grad():
        val_features = build_feature_sets(val, [probe.feature_set])[probe.feature_set].to(device)
        ranked = rank_scores(probe.head(val_features), max(config.linear.topk))
    res = evaluate_predictions(ranked, val_labels, classes, config.linear.topk)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"weight": probe.head.weight.detach().cpu(), "bias": probe.head.bias.detach().cpu(),
                       "feature_set": probe.feature_set, "learning_rate": probe.learning_rate,
                       "class_names": list(classes), "backbone": train.identity}, out / "head.pt")
    results = {"num_train": len(train), "num_val": len(val), "num_classes": len(classes), "backbone": train.identity,
               "best": {"feature_set": probe.feature_set, "learning_rate": probe.learning_rate},
               "val": res.summary(), "sweep": probe.sweep}
    summary = (f"linear: {res.headline()} ({probe.feature_set}, lr {probe.learning_rate:g}; {len(train)} train, "
               f"{len(val)} val) -> {out}")
    write_run_outputs(out, config=config, results=results, summary=summary, table=res.per_class)
    return results
