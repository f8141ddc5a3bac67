"""Loading weights never guesses and never loads garbage: a checkpoint with several state dicts needs a choice,
NaN/inf weights are refused naming the file and tensors, and hf:// without a network fails (or uses the cache) at
once instead of retrying for half a minute."""

from __future__ import annotations

import socket
import sys
import time
import types

import pytest
import torch
from safetensors.torch import save_file

import eupe
from eupe.loading import CheckpointError, all_finite, non_finite_keys, read_state_dict


@pytest.fixture(scope="module")
def states():
    """Two different state dicts of one small architecture (a student and a teacher)."""
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        out.append({k: v.clone() for k, v in eupe.create_model("eupe_vitt16", depth=1).state_dict().items()})
    return out


def _load(weights):
    return eupe.load("eupe_vitt16", weights=weights, depth=1)


def _same(model, state):
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


# ---- ambiguous containers


def test_student_and_teacher_in_one_checkpoint_is_refused_with_the_choices(tmp_path, states):
    student, teacher = states
    path = tmp_path / "train.pth"
    torch.save({"student": student, "teacher": teacher, "iteration": 7}, path)
    with pytest.raises(CheckpointError) as err:
        _load(path)
    message = str(err.value)
    assert "several state dicts (teacher, student)" in message
    assert f"{path}#teacher" in message and f"{path}#student" in message
    _same(_load(f"{path}#student"), student)
    _same(_load(f"{path}#teacher"), teacher)
    model = eupe.create_model("eupe_vitt16", depth=1)
    eupe.load_weights(model, f"{path}#student")
    _same(model, student)
    _same(_load(f"file://{path}#teacher"), teacher)
    torch.testing.assert_close(read_state_dict(path, key="student")["cls_token"], student["cls_token"])
    with pytest.raises(CheckpointError, match=r"no entry 'studnet' .*\['iteration', 'student', 'teacher'\]"):
        _load(f"{path}#studnet")


@pytest.mark.parametrize("layout, choice", [
    ({"model": 0, "model_ema": 1}, "model_ema"),  # a model and its EMA
    ({"state_dict": 0, "state_dict_ema": 1}, "state_dict"),  # timm's training checkpoints
    ({"model": {"student": 0, "teacher": 1}}, "model.teacher"),  # nested: the choice is a dotted path
])
def test_every_ambiguous_layout_needs_a_choice(tmp_path, states, layout, choice):
    def fill(node):
        return {k: fill(v) for k, v in node.items()} if isinstance(node, dict) else states[node]

    path = tmp_path / "ckpt.pt"
    torch.save(fill(layout), path)
    with pytest.raises(CheckpointError, match=f"{path}#{choice}"):
        _load(path)
    expected = states[1] if choice.endswith(("ema", "teacher")) else states[0]
    _same(_load(f"{path}#{choice}"), expected)


def test_a_file_whose_name_holds_a_hash_still_loads(tmp_path, states):
    path = tmp_path / "run#3.pt"
    torch.save(states[0], path)
    _same(_load(path), states[0])


def test_a_folder_given_as_weights_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        _load(tmp_path)


# ---- non-finite weights


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_non_finite_weights_are_refused_naming_the_file_and_first_keys(tmp_path, states, suffix):
    state = {k: v.clone() for k, v in states[0].items()}
    state["blocks.0.attn.qkv.weight"][3, 3] = float("nan")
    state["norm.weight"][0] = float("-inf")
    path = tmp_path / f"diverged{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"model": state}, path)
    for load in (_load, lambda p: eupe.load_weights(eupe.create_model("eupe_vitt16", depth=1), p)):
        with pytest.raises(CheckpointError) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "NaN/inf values in 2 of its" in message
        assert "blocks.0.attn.qkv.weight" in message and "norm.weight" in message


def test_huge_finite_weights_are_not_mistaken_for_infinities():
    huge = torch.full((1000,), 1e30)  # its 2-norm overflows float32, its values do not
    assert all_finite(huge) and not all_finite(torch.tensor([1.0, float("nan")]))
    assert non_finite_keys({"a": {"b": [huge, torch.tensor([float("inf")])]}, "c": torch.ones(2, dtype=torch.long)}) \
        == ["a.b.1"]
    assert non_finite_keys({"top1": float("nan"), "rows": [{"acc": 0.5}, {"acc": float("inf")}]}) \
        == ["top1", "rows.1.acc"]  # the same helper checks results records


def test_an_hf_folder_with_non_finite_weights_is_refused(tmp_path, states):
    from safetensors.torch import load_file

    from eupe.export.hf import WEIGHTS_FILE, load_hf, save_hf

    model = eupe.create_model("eupe_vitt16", depth=1)
    model.load_state_dict(states[0], strict=False)
    folder = save_hf(model, tmp_path / "hf", image_size=32)
    load_hf(folder)  # finite: loads
    tensors = load_file(str(folder / WEIGHTS_FILE))
    name = next(k for k in tensors if k.endswith("norm.weight"))
    tensors[name][0] = float("nan")
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=f"{folder} holds NaN/inf values in 1 of its .*export it again"):
        load_hf(folder)


def test_the_demo_hed_teacher_refuses_non_finite_weights(tmp_path, monkeypatch):
    from eupe.demo.teachers import hed

    state = hed.HED().state_dict()
    state["block3.2.weight"][0, 0, 0, 0] = float("inf")
    monkeypatch.setattr(hed, "packaged_file", lambda *args, **kwargs: tmp_path / "hed.h5")
    monkeypatch.setattr(hed, "hed_state_dict", lambda path: state)
    with pytest.raises(CheckpointError, match=r"hed.h5 holds NaN/inf values .*block3.2.weight.*reinstall"):
        hed.load_hed()


# ---- hf:// without a network


def _hub(calls, cached=None):
    def hf_hub_download(repo_id, filename, revision=None, local_files_only=False):
        calls.append(local_files_only)
        if not local_files_only:
            time.sleep(25)  # what huggingface_hub's retries cost without a network
            raise OSError("network unreachable")
        if cached is None:
            raise FileNotFoundError("not in the cache")
        return str(cached)

    return types.SimpleNamespace(hf_hub_download=hf_hub_download)


@pytest.mark.parametrize("network", ["refused", "hangs"])
def test_hf_weights_without_a_network_fail_fast(monkeypatch, network):
    def connect(address, timeout=None):
        if network == "hangs":  # a name lookup that never answers (no timeout of its own)
            time.sleep(30)
        raise OSError("Network is unreachable")

    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", _hub(calls))
    monkeypatch.setattr(socket, "create_connection", connect)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        _load("hf://facebook/EUPE-ViT-T")
    assert time.perf_counter() - start < 2
    assert calls == [True]  # the cache only: no download attempt that would retry
    assert "huggingface.co cannot be reached" in str(err.value) and "no cached copy" in str(err.value)
    assert "--weights PATH" in str(err.value) and "--weights random" in str(err.value)


def test_hf_weights_without_a_network_come_from_the_cache(tmp_path, monkeypatch, states):
    cached = tmp_path / "EUPE-ViT-T.pt"
    torch.save({"student": states[0], "teacher": states[1]}, cached)
    calls = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", _hub(calls, cached))
    monkeypatch.setattr("eupe.loading.sources.hub_reachable", lambda: False)
    _same(_load("hf://facebook/EUPE-ViT-T#student"), states[0])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("eupe.loading.sources.hub_reachable", lambda: pytest.fail("probed although offline"))
    _same(_load("hf://facebook/EUPE-ViT-T@main#teacher"), states[1])
    assert calls == [True, True]
