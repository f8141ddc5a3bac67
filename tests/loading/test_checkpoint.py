"""Loading: every source kind, container formats, and one clear error for everything that does not fit."""

from __future__ import annotations

import collections
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

import eupe
from eupe.loading import CheckpointError, read_state_dict


@pytest.fixture(scope="module")
def vitt_state():
    model = eupe.create_model("eupe_vitt16", depth=2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _projectors(dim: int = 192) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    heads = eupe.models.Projectors.build(dim, 32, {"proxy": 48})
    return {f"projectors.{k}": v for k, v in heads.state_dict().items()}


def _load(path, **kw):
    return eupe.load("eupe_vitt16", weights=path, depth=2, **kw)


def _same_weights(model, state):
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_pt_file_with_projectors(tmp_path, vitt_state):
    path = tmp_path / "EUPE-ViT-T.pt"
    torch.save({**vitt_state, **_projectors()}, path)
    model = _load(path)
    _same_weights(model, {**vitt_state, **_projectors()})
    assert not model.training
    # the heads are a registered submodule, saved under exactly the checkpoint's keys and moved by .to()
    assert {k for k in model.state_dict() if k.startswith("projectors.")} == set(_projectors())
    assert model.projectors["proxy"]["cls"].out_dim == 48
    assert model.to(torch.float64).projectors["proxy"]["cls"][0].weight.dtype == torch.float64
    fresh = eupe.create_model("eupe_vitt16", depth=2)
    report = eupe.load_weights(fresh, path, model_name="eupe_vitt16")
    assert report.projector_teachers == ("proxy",) and "projectors" in str(report)
    assert set(fresh.state_dict()) == set(model.state_dict())


def test_projector_keys_are_checked_strictly(tmp_path, vitt_state):
    path = tmp_path / "bad_heads.pt"
    broken = {k: v for k, v in _projectors().items() if not k.startswith("projectors.proxy.patch.3")}
    torch.save({**vitt_state, **broken}, path)
    with pytest.raises(CheckpointError, match="projectors"):
        _load(path)


def test_safetensors_and_file_url(tmp_path, vitt_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in vitt_state.items()}, str(path))
    _same_weights(_load(path), vitt_state)
    _same_weights(_load(path.as_uri()), vitt_state)


def test_containers_and_prefixes_are_unwrapped(tmp_path, vitt_state):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {f"module.{k}": v for k, v in vitt_state.items()}, "epoch": 3}, path)
    _same_weights(_load(path), vitt_state)


def test_derived_buffers_may_be_absent(tmp_path, vitt_state):
    path = tmp_path / "timm_like.pt"
    torch.save({k: v for k, v in vitt_state.items() if not k.endswith("bias_mask")}, path)
    model = eupe.create_model("eupe_vitt16", depth=2)
    report = eupe.load_weights(model, path)
    assert report.derived_keys == ("blocks.0.attn.qkv.bias_mask", "blocks.1.attn.qkv.bias_mask")
    assert model.blocks[0].attn.qkv.bias_mask[192:384].eq(0).all()


def test_dtype_and_device_arguments(tmp_path, vitt_state):
    path = tmp_path / "w.pt"
    torch.save(vitt_state, path)
    model = _load(path, dtype=torch.bfloat16, device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_wrong_architecture_names_model_file_keys_and_suggests(tmp_path):
    path = tmp_path / "EUPE-ViT-S.pt"
    torch.save(eupe.create_model("eupe_vitt16").state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        eupe.load("eupe_vits16", weights=path)
    message = str(err.value)
    assert "eupe_vits16" in message and str(path) in message
    assert "shape mismatch" in message and "cls_token" in message
    assert "'eupe_vitt16'" in message  # the architecture that does fit


def test_missing_and_unexpected_keys_are_errors(tmp_path, vitt_state):
    state = dict(vitt_state)
    state.pop("norm.weight")
    state["extra.thing"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): norm.weight; 1 unexpected key\(s\): extra.thing"):
        _load(path)


def test_truncated_empty_and_garbage_files(tmp_path, vitt_state):
    good = tmp_path / "good.pt"
    torch.save(vitt_state, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        _load(truncated)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        _load(empty)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="Cannot read"):
        _load(garbage)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)


def test_missing_file_is_clear():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _load("no/such/EUPE-ViT-T.pt")


def test_https_download_is_cached_and_then_offline(tmp_path, monkeypatch, vitt_state):
    source = tmp_path / "served.pt"
    torch.save(vitt_state, source)
    calls = []

    def fake_download(url, dst, progress=True):
        calls.append(url)
        with open(source, "rb") as src, open(dst, "wb") as out:
            out.write(src.read())

    monkeypatch.setenv("EUPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.invalid/EUPE-ViT-T.pt"
    _same_weights(_load(url), vitt_state)
    _same_weights(_load(url), vitt_state)
    assert calls == [url]  # second load used the cache
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_hf_reference_uses_cache_when_offline(tmp_path, monkeypatch, vitt_state):
    cached = tmp_path / "EUPE-ViT-T.pt"
    torch.save(vitt_state, cached)
    requests = []

    def hf_hub_download(repo_id, filename, revision=None, local_files_only=False):
        requests.append((repo_id, filename, revision, local_files_only))
        if not local_files_only:
            raise OSError("network unreachable")
        return str(cached)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    monkeypatch.setattr("eupe.loading.sources.hub_reachable", lambda: True)  # reachable, yet the download fails
    _same_weights(_load("hf://facebook/EUPE-ViT-T"), vitt_state)  # file name from the model's pretrained cfg
    assert requests == [("facebook/EUPE-ViT-T", "EUPE-ViT-T.pt", None, False),
                        ("facebook/EUPE-ViT-T", "EUPE-ViT-T.pt", None, True)]
    _load("hf://facebook/EUPE-ViT-T/other/file.pt@v1")
    assert requests[-1] == ("facebook/EUPE-ViT-T", "other/file.pt", "v1", True)


def test_load_without_weights_or_release():
    model = eupe.load("eupe_vitt16", pretrained=False, depth=1)
    assert len(model.projectors) == 0 and not any(k.startswith("projectors.") for k in model.state_dict())
    with pytest.raises(ValueError, match="no released weights"):
        eupe.load("vitl16")


def test_ordered_dict_state_dicts_are_accepted(tmp_path, vitt_state):
    path = tmp_path / "ordered.pt"
    torch.save(collections.OrderedDict(vitt_state), path)
    _same_weights(_load(path), vitt_state)


def test_int8_quantized_load_keeps_features_close(tmp_path, vitt_state):
    path = tmp_path / "w.pt"
    torch.save(vitt_state, path)
    fp32, int8 = _load(path), _load(path, quantize="int8")
    assert "quantized" in type(int8.blocks[0].mlp.fc1).__module__  # swapped for a dynamic int8 Linear
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(fp32(x), int8(x), dim=-1)
    assert cos.min() > 0.99
    with pytest.raises(ValueError, match="quantize='int8'"):
        _load(path, quantize="int4")


def test_api_forms_of_timm_and_the_cli(tmp_path, vitt_state):
    random_model = eupe.load("eupe_vitt16", weights="random", depth=2)  # as --weights random
    assert not random_model.training and len(random_model.projectors) == 0
    path = tmp_path / "EUPE-ViT-T.pt"
    torch.save(vitt_state, path)
    model = eupe.create_model("eupe_vitt16", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), depth=2)
    assert model.training  # timm returns training-mode models
    _same_weights(model, vitt_state)
    assert eupe.create_model("eupe_vitt16", depth=2).training
    with pytest.raises(ValueError, match="only 'file'"):
        eupe.create_model("eupe_vitt16", pretrained=True, pretrained_cfg_overlay=dict(url="x"))
