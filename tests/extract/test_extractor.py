"""Extraction to disk: stored keys match the backbone, bad files are listed, runs resume after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.images import load_image
from eupe.extract import ExtractConfig, FeatureStore, FeatureStoreError, extract_features, load_features
from eupe.extract import store as store_lib
from eupe.extract.transforms import make_eval_transform
from tests.helpers import tiny_vit


def make_tree(root, per_class=3, classes=("cat", "dog"), size=(40, 36)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def cfg(**kw):
    base = dict(resolution=32, shard_size=2, batch_size=2, num_workers=0)
    base.update(kw)
    return ExtractConfig(**base)


@pytest.fixture
def model():
    return tiny_vit().eval()


def test_features_match_direct_forward(tmp_path, model):
    src = make_tree(tmp_path / "src")
    (src / "dog" / "broken.jpg").write_bytes(b"")
    (src / "cat" / "notes.jpg").write_text("not an image")
    store = extract_features(model, src, tmp_path / "out", cfg(storage_tokens=True, patch_tokens=True,
                                                               patch_mean=True), progress=False)
    assert store.keys == ["cls", "storage", "patch", "patch_mean"] and len(store) == 6
    assert store.class_names == ["cat", "dog"] and store.labels.tolist() == [0, 0, 0, 1, 1, 1]
    skipped = {p.split("/")[-1]: r for p, r in store.skipped}
    assert set(skipped) == {"broken.jpg", "notes.jpg"}
    assert "empty" in skipped["broken.jpg"] and "not an image" in skipped["notes.jpg"]

    transform = make_eval_transform(32, "crop")
    x = torch.stack([transform(load_image(p)) for p in store.paths])
    with torch.inference_mode():
        ref = model.forward_features(x)
    torch.testing.assert_close(store.load("cls"), ref["x_norm_clstoken"])
    torch.testing.assert_close(store.load("storage"), ref["x_storage_tokens"])
    torch.testing.assert_close(store.load("patch"), ref["x_norm_patchtokens"])
    torch.testing.assert_close(store.load("patch_mean"), ref["x_norm_patchtokens"].mean(1))
    fs = load_features(tmp_path / "out")
    assert fs.features.shape == (6, 64) and fs.paths == store.paths


def test_layers_and_npy_format(tmp_path, model):
    src = make_tree(tmp_path / "src", per_class=2)
    store = extract_features(model, src, tmp_path / "out", cfg(layers=[0, -1], format="npy", dtype="float16"),
                             progress=False)
    assert store.keys == ["layer0.cls", "layer1.cls"]
    assert (store.shard_paths()[0] / "layer0.cls.npy").is_file()
    x = torch.stack([make_eval_transform(32)(load_image(p)) for p in store.paths])
    with torch.inference_mode():
        (_, c0), (_, c1) = model.get_intermediate_layers(x, n=[0, 1], return_class_token=True)
    torch.testing.assert_close(store.load("layer0.cls"), c0.half().float())
    torch.testing.assert_close(store.load("layer1.cls"), c1.half().float())
    with pytest.raises(FeatureStoreError, match="has no features 'cls'"):
        store.load("cls")


def test_resume_after_kill_recomputes_nothing_finished(tmp_path, model, monkeypatch):
    src = make_tree(tmp_path / "src", per_class=5)  # 10 images -> 5 shards of 2
    (src / "cat" / "zz_truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    full = extract_features(model, src, tmp_path / "full", cfg(), progress=False)

    real_write = store_lib.write_shard
    written: list[int] = []

    def killed_after_two(root, shard, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated kill")
        written.append(shard)
        return real_write(root, shard, *args, **kwargs)

    monkeypatch.setattr(store_lib, "write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model, src, tmp_path / "out", cfg(), progress=False)
    out = tmp_path / "out"
    assert written == [0, 1]
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(FeatureStoreError, match="did not finish"):
        FeatureStore(out)
    # a half-written shard folder, as a kill during a write would leave it (atomic_folder's name)
    (out / "shards" / ".00002.k2j4h5g6.tmp").mkdir()
    (out / "shards" / ".00002.k2j4h5g6.tmp" / "features.safetensors").write_bytes(b"garbage")
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*") if p.is_file()}

    written.clear()
    monkeypatch.setattr(store_lib, "write_shard", lambda root, shard, *a, **k: (written.append(shard),
                                                                                real_write(root, shard, *a, **k))[1])
    resumed = extract_features(model, src, out, cfg(batch_size=3), progress=False)  # batch size may change
    assert written == [2, 3, 4, 5]
    assert not (out / "shards" / ".00002.k2j4h5g6.tmp").exists()
    for p, t in mtimes.items():
        if ".tmp" not in str(p):
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    assert resumed.paths == full.paths and resumed.skipped == full.skipped and len(resumed.skipped) == 1
    torch.testing.assert_close(resumed.load("cls"), full.load("cls"))
    assert (out / "index.csv").read_text() == (tmp_path / "full" / "index.csv").read_text()

    written.clear()
    extract_features(model, src, out, cfg(), progress=False)  # complete: nothing to do
    assert written == []


def test_other_settings_refuse_to_mix(tmp_path, model):
    src = make_tree(tmp_path / "src", per_class=1)
    a, b = {"model": "m", "weights": "sha256:a"}, {"model": "m", "weights": "sha256:b"}
    extract_features(model, src, tmp_path / "out", cfg(), identity=a, progress=False)
    with pytest.raises(FeatureStoreError, match="resolution differs"):
        extract_features(model, src, tmp_path / "out", cfg(resolution=48), identity=a, progress=False)
    with pytest.raises(FeatureStoreError, match=r"model.weights differs \('sha256:a' stored, 'sha256:b' now\)"):
        extract_features(model, src, tmp_path / "out", cfg(), identity=b, progress=False)
    store = extract_features(model, src, tmp_path / "out", cfg(resolution=48), identity=b, overwrite=True,
                             progress=False)
    assert store.manifest["settings"]["resolution"] == 48 and store.identity == b


def test_shard_of_only_bad_files_and_workers(tmp_path, model):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    (src / "b.jpg").write_text("text")
    Image.new("RGB", (33, 47), (10, 200, 30)).save(src / "c.png")
    store = extract_features(model, src, tmp_path / "out", cfg(num_workers=2, patch_tokens=True), progress=False)
    assert len(store) == 1 and len(store.skipped) == 2 and store.labels.tolist() == [-1]
    assert store.load("patch").shape == (1, 4, 64)


def test_kill_between_last_shard_and_index(tmp_path, model):
    src = make_tree(tmp_path / "src", per_class=1)
    out = tmp_path / "out"
    extract_features(model, src, out, cfg(), progress=False)
    index = (out / "index.csv").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))
    (out / "index.csv").unlink()
    store = extract_features(model, src, out, cfg(num_workers=2), progress=False)
    assert (out / "index.csv").read_text() == index and len(store) == 2
