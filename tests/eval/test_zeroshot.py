"""Zero-shot: adapter head + cosine against class embeddings, from a checkpoint's projectors or a head file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import eupe
from eupe.eval.zeroshot import load_class_embeddings, select_class_head, zero_shot_logits
from eupe.extract import FeatureStore
from eupe.models import Projectors


def projector_tensors(in_dim=192, seed=0):
    torch.manual_seed(seed)
    heads = Projectors.build(in_dim, 16, {"pe": 8, "dino": 6})
    return {f"projectors.{k}": v for k, v in heads.state_dict().items()}


def test_logits_are_cosines_of_projected_tokens():
    tensors = projector_tensors(in_dim=10)
    name, head = select_class_head(Projectors.from_state_dict(tensors), None, "ckpt")
    assert name == "pe"
    tokens, emb = torch.randn(5, 10), torch.randn(3, 8)
    logits = zero_shot_logits(tokens, head, emb)
    w0, ln_w, ln_b, w3 = (tensors[f"projectors.pe.cls.{k}"].numpy() for k in ("0.weight", "1.weight", "1.bias",
                                                                               "3.weight"))
    h = tokens.numpy() @ w0.T
    h = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-5) * ln_w + ln_b
    from math import erf, sqrt

    h = h * 0.5 * (1 + np.vectorize(erf)(h / sqrt(2)))
    z = h @ w3.T
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    e = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(logits.numpy(), z @ e.T, atol=1e-5)
    assert select_class_head(Projectors.from_state_dict(tensors), "dino", "ckpt")[0] == "dino"
    with pytest.raises(ValueError, match="no adapter head for teacher 'clip'"):
        select_class_head(Projectors.from_state_dict(tensors), "clip", "ckpt")
    with pytest.raises(ValueError, match="carries no adapter heads"):
        select_class_head(Projectors(), None, "ckpt")
    with pytest.raises(ValueError, match="6-d"):
        zero_shot_logits(tokens, select_class_head(Projectors.from_state_dict(tensors), "dino", "x")[1], emb)


def test_class_embedding_files(tmp_path):
    from safetensors.torch import save_file

    emb = torch.randn(4, 3)
    np.save(tmp_path / "e.npy", emb.numpy())
    save_file({"text": emb}, str(tmp_path / "e.safetensors"))
    torch.testing.assert_close(load_class_embeddings(tmp_path / "e.npy"), emb)
    torch.testing.assert_close(load_class_embeddings(tmp_path / "e.safetensors"), emb)
    save_file({"a": emb, "b": emb.clone()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match="exactly one 2-D tensor"):
        load_class_embeddings(tmp_path / "two.safetensors")
    with pytest.raises(FileNotFoundError):
        load_class_embeddings(tmp_path / "none.npy")


@pytest.fixture
def main(eval_cli):
    return eval_cli("zeroshot")


def test_zeroshot_cli_with_checkpoint_heads_and_head_file(tmp_path, main, capsys):
    from safetensors.torch import save_file

    for ci, c in enumerate(("ant", "bee", "cow")):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 60 * ci + 20 * i, np.uint8)).save(tmp_path / "val" / c / f"{i}.png")
    model = eupe.create_model("eupe_vitt16", depth=1)
    tensors = projector_tensors()
    torch.save({**model.state_dict(), **tensors}, tmp_path / "ckpt.pt")
    emb = torch.randn(3, 8)
    np.save(tmp_path / "emb.npy", emb.numpy())
    (tmp_path / "names.txt").write_text("cow\nant\nbee\n")  # embedding rows in another order than the folders
    out = tmp_path / "run"
    common = ["--data", str(tmp_path / "val"), "--class-embeddings", str(tmp_path / "emb.npy"), "--class-names",
              str(tmp_path / "names.txt"), "--model", "eupe_vitt16", "--arch", "depth=1", "--resolution", "32",
              "--num-workers", "0"]
    assert main(["eval", "zeroshot", *common, "--weights", str(tmp_path / "ckpt.pt"), "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("zeroshot: top1")
    results = json.loads((out / "results.json").read_text())

    store = FeatureStore(out / "features" / "val")
    _, head = select_class_head(Projectors.from_state_dict(tensors), "pe", "t")
    pred = zero_shot_logits(store.load("cls"), head, emb).argmax(1)
    truth = torch.tensor([["cow", "ant", "bee"].index(store.class_names[i]) for i in store.labels])
    assert results["teacher"] == "pe" and results["num_classes"] == 3
    assert results["top1"] == pytest.approx(100 * (pred == truth).double().mean().item())

    save_file({k: v for k, v in tensors.items() if ".dino." in k}, str(tmp_path / "head.safetensors"))
    out2 = tmp_path / "run2"
    assert main(["eval", "zeroshot", *common, "--weights", "random", "--head", str(tmp_path / "head.safetensors"),
                 "--output-dir", str(out2), "--class-embeddings", str(tmp_path / "emb.npy")]) == 2
    assert "6-d" in capsys.readouterr().err  # the dino head maps to 6-d, the embeddings are 8-d
    assert main(["eval", "zeroshot", *common, "--weights", "random", "--output-dir", str(out2)]) == 2
    assert "carries no adapter heads" in capsys.readouterr().err
