"""Linear probe: heads trained together equal heads trained alone, the sweep picks on the holdout, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eupe.eval.linear import LinearConfig, build_feature_sets, holdout_split, train_linear_probes


def blobs(n, classes=4, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    labels = torch.randint(0, classes, (n,), generator=g)
    return centers[labels] + torch.randn(n, dim, generator=g), labels


def manual_sgd(x, y, classes, lr, config, init):
    """Plain re-implementation of one head's training: same init, batches, momentum and cosine schedule."""
    w, b = init[0].clone().requires_grad_(), init[1].clone().requires_grad_()
    buf_w, buf_b = torch.zeros_like(w), torch.zeros_like(b)
    g = torch.Generator().manual_seed(config.seed)
    n = len(y)
    steps = config.epochs * -(-n // config.batch_size)
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, config.batch_size):
            idx = order[s : s + config.batch_size]
            loss = F.cross_entropy(x[idx] @ w.T + b, y[idx])
            gw, gb = torch.autograd.grad(loss, (w, b))
            cur = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
            with torch.no_grad():
                buf_w.mul_(config.momentum).add_(gw)
                buf_b.mul_(config.momentum).add_(gb)
                w -= cur * buf_w
                b -= cur * buf_b
            step += 1
    return w.detach(), b.detach()


def test_heads_trained_together_equal_heads_trained_alone():
    x, y = blobs(160)
    x, hx, y, hy = x[:120], x[120:], y[:120], y[120:]
    config = LinearConfig(feature_sets=["f"], learning_rates=[0.5, 1e-3, 0.05], epochs=3, batch_size=32)
    torch.manual_seed(0)
    result = train_linear_probes({"f": x}, y, 4, config, {"f": hx}, hy)
    assert [r["learning_rate"] for r in result.sweep] == [1e-3, 0.05, 0.5]
    best = max(result.sweep, key=lambda r: r["holdout_top1"])
    assert result.learning_rate == best["learning_rate"] and best["holdout_top1"] > 90
    # the chosen head, trained alone, ends identical; and a hand-written SGD gives the same weights
    alone = train_linear_probes({"f": x}, y, 4, dataclasses.replace(config, learning_rates=[0.05]), {"f": hx}, hy)
    torch.testing.assert_close(alone.head.weight, result.head.weight)
    w0 = torch.empty(4, 8).normal_(std=0.01, generator=torch.Generator().manual_seed(config.seed))
    w, b = manual_sgd(x, y, 4, 0.05, config, (w0, torch.zeros(4)))
    torch.testing.assert_close(alone.head.weight, w, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone.head.bias, b, atol=1e-5, rtol=1e-4)


def test_holdout_split_and_validation():
    fit, hold = holdout_split(20, 0.1, seed=3)
    assert len(hold) == 2 and sorted(torch.cat([fit, hold]).tolist()) == list(range(20))
    assert torch.equal(holdout_split(20, 0.1, seed=3)[1], hold)
    with pytest.raises(ValueError, match="at least 2"):
        holdout_split(1, 0.1, 0)
    with pytest.raises(ValueError, match="holdout_fraction"):
        LinearConfig(holdout_fraction=1.5).validate()


class CountingStore:
    """Stands in for a FeatureStore: counts how often each key is read."""

    root = "store"

    def __init__(self, **features):
        self.features, self.keys, self.reads = features, list(features), []

    def load(self, key):
        self.reads.append(key)
        return self.features[key]


def test_feature_sets_read_each_key_once():
    cls, mean = torch.randn(5, 3), torch.randn(5, 1, 2)
    store = CountingStore(cls=cls, patch_mean=mean)
    sets = build_feature_sets(store, ["cls", "cls+patch_mean", "cls+storage"])
    assert list(sets) == ["cls", "cls+patch_mean"]  # the store has no storage tokens
    assert torch.equal(sets["cls+patch_mean"], torch.cat([cls, mean.flatten(1)], dim=1))
    assert sorted(store.reads) == ["cls", "patch_mean"]
    with pytest.raises(ValueError, match="None of the feature sets"):
        build_feature_sets(store, ["storage"])


@pytest.fixture
def main(eval_cli):
    return eval_cli("linear")


def test_linear_cli_end_to_end(tmp_path, main, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for ci, c in enumerate(("red", "green")):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                img = np.zeros((32, 32, 3), np.uint8)
                img[..., ci] = 180 + rng.integers(0, 60)
                Image.fromarray(img).save(tmp_path / split / c / f"{i}.png")
    out = tmp_path / "run"
    assert main(["eval", "linear", "--data", str(tmp_path), "--output-dir", str(out), "--model", "eupe_vitt16",
                 "--weights", "random", "--arch", "depth=1", "--resolution", "32", "--num-workers", "0",
                 "--learning-rates", "0.01", "0.1", "--epochs", "2", "--set", "linear.holdout_fraction=0.25"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("linear: top1 ")
    results = json.loads((out / "results.json").read_text())
    assert len(results["sweep"]) == 4  # {cls, cls+patch_mean} x {0.01, 0.1}
    head = torch.load(out / "head.pt", weights_only=True)
    dim = 192 if head["feature_set"] == "cls" else 384
    assert head["weight"].shape == (2, dim) and head["class_names"] == ["green", "red"]
    assert results["best"]["feature_set"] == head["feature_set"] and "holdout_fraction: 0.25" in (
        out / "config.yaml").read_text()
