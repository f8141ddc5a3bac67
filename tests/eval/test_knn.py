"""k-NN: paper protocol against scikit-learn, weighted-cosine protocol against plain numpy, chunking, ties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.eval.knn import KnnConfig, evaluate_knn, knn_classify, knn_search, majority_vote, weighted_vote


def blobs(n_train=400, n_query=150, classes=6, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.2
    tl = torch.randint(0, classes, (n_train,), generator=g)
    ql = torch.randint(0, classes, (n_query,), generator=g)
    return (centers[tl] + torch.randn(n_train, dim, generator=g), tl,
            centers[ql] + torch.randn(n_query, dim, generator=g), ql)


def test_paper_protocol_equals_sklearn():
    sklearn_neighbors = pytest.importorskip("sklearn.neighbors", reason="scikit-learn is the independent reference")
    train, tl, query, ql = blobs()
    cfg = KnnConfig(protocol="paper", paper_ks=[10, 3], tie_break="lowest_label", query_chunk=64, train_chunk=100)
    ours = knn_classify(train, tl, query, 6, cfg)["paper"]
    results, _ = evaluate_knn(train, tl, query, ql, [str(c) for c in range(6)], cfg)
    for k in (10, 3):
        sk = sklearn_neighbors.KNeighborsClassifier(n_neighbors=k).fit(train.numpy(), tl.numpy())
        expected = sk.predict(query.numpy())
        np.testing.assert_array_equal(ours[k][:, 0].numpy(), expected)
        assert results["paper"][f"k={k}"]["top1"] == pytest.approx(100 * (expected == ql.numpy()).mean())


def numpy_weighted_knn(train, tl, query, k, temperature, classes, topk=5):
    t = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    sims = q @ t.T
    out = []
    for row in sims:
        nn_idx = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(classes)
        for j in nn_idx:
            votes[tl[j]] += np.exp(row[j] / temperature)
        order = [c for c in np.argsort(-votes, kind="stable") if votes[c] > 0][:topk]
        out.append(order + [-1] * (topk - len(order)))
    return np.array(out)


def test_reference_protocol_equals_numpy():
    train, tl, query, ql = blobs(seed=1)
    cfg = KnnConfig(protocol="reference", reference_ks=[10, 20, 100], temperature=0.07, query_chunk=50,
                    train_chunk=77)
    ours = knn_classify(train, tl, query, 6, cfg)["reference"]
    for k in (10, 20, 100):
        expected = numpy_weighted_knn(train.numpy().astype(np.float64), tl.numpy(), query.numpy().astype(np.float64),
                                      k, 0.07, 6)
        np.testing.assert_array_equal(ours[k][:, 0].numpy(), expected[:, 0])
        assert (ours[k][:, :5].numpy() == expected).mean() > 0.99  # float32 vs float64 near-equal vote sums


def test_chunked_equals_unchunked():
    train, tl, query, _ = blobs(n_train=300, n_query=90, seed=2)
    for metric in ("l2", "cosine"):
        s1, i1 = knn_search(train, query, 20, metric=metric, query_chunk=10_000, train_chunk=10_000)
        s2, i2 = knn_search(train, query, 20, metric=metric, query_chunk=7, train_chunk=13)
        assert torch.equal(i1, i2)
        torch.testing.assert_close(s1, s2)
    # the l2 scores are minus the squared distances (independent brute force in float64)
    squared = torch.cdist(query.double(), train.double()).pow(2).topk(20, largest=False).values
    torch.testing.assert_close(knn_search(train, query, 20, metric="l2")[0].double(), -squared, atol=1e-3, rtol=1e-4)
    big = knn_classify(train, tl, query, 6, KnnConfig())
    small = knn_classify(train, tl, query, 6, KnnConfig(query_chunk=11, train_chunk=29))
    for protocol in big:
        for k in big[protocol]:
            assert torch.equal(big[protocol][k], small[protocol][k])


def test_majority_vote_tie_break_rules():
    # neighbours nearest first: class 1, 0, 0, 1 -> a 2-2 tie between classes 0 and 1; class 2 gets no vote
    labels = torch.tensor([[1, 0, 0, 1], [2, 2, 0, 0]])
    nearest = majority_vote(labels, 4, topk=4, tie_break="nearest")
    assert nearest.tolist() == [[1, 0, -1, -1], [2, 0, -1, -1]]  # the class of the closest neighbour wins
    lowest = majority_vote(labels, 4, topk=4, tie_break="lowest_label")
    assert lowest.tolist() == [[0, 1, -1, -1], [0, 2, -1, -1]]  # scikit-learn's rule
    assert majority_vote(torch.tensor([[3, 1, 1]]), 4, topk=2).tolist() == [[1, 3]]  # no tie: most votes
    weighted = weighted_vote(torch.tensor([[0, 1, 1]]), torch.tensor([[0.9, 0.5, 0.5]]), 3, topk=3)
    assert weighted.tolist() == [[0, 1, -1]]  # exp(0.9/T) > 2 exp(0.5/T)


def make_split(root, split, n, rng):
    for ci, c in enumerate(("bird", "fish")):
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            base = np.zeros((36, 40, 3), np.uint8)
            base[..., ci] = 200
            img = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / split / c / f"{i}.png")


@pytest.fixture
def main(eval_cli):
    return eval_cli("knn", commands=("extract", "eval"))


def test_knn_cli_end_to_end(tmp_path, main, capsys):
    rng = np.random.default_rng(0)
    make_split(tmp_path / "data", "train", 4, rng)
    make_split(tmp_path / "data", "val", 2, rng)
    backbone = ["--model", "eupe_vitt16", "--weights", "random", "--arch", "depth=1", "--resolution", "32",
                "--num-workers", "0"]
    out = tmp_path / "run"
    assert main(["eval", "knn", "--data", str(tmp_path / "data"), "--output-dir", str(out), "--paper-ks", "3",
                 "--set", "knn.reference_ks=[3,5]", *backbone]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("knn: paper k=3: top1") and "reference k=3" in line
    results = json.loads((out / "results.json").read_text())
    assert results["num_train"] == 8 and results["num_val"] == 4 and set(results["reference"]) == {"k=3", "k=5"}
    assert "temperature: 0.07" in (out / "config.yaml").read_text()
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "protocol,k,class_index,class_name,n,top1,top5"

    # the extracted feature folders are valid inputs themselves, and give the same numbers
    out2 = tmp_path / "run2"
    assert main(["eval", "knn", "--train", str(out / "features" / "train"), "--val", str(out / "features" / "val"),
                 "--output-dir", str(out2), "--paper-ks", "3", "--set", "knn.reference_ks=[3,5]"]) == 0
    again = json.loads((out2 / "results.json").read_text())
    assert again["paper"] == results["paper"] and again["reference"] == results["reference"]


def test_knn_cli_missing_split(tmp_path, main, capsys):
    make_split(tmp_path / "data", "train", 1, np.random.default_rng(0))
    assert main(["eval", "knn", "--data", str(tmp_path / "data"), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has no 'val' folder" in err and "val/<class>" in err
