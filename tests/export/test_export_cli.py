from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import eupe.cli.main as cli


def test_export_torchscript_random(tmp_path, capsys):
    out = tmp_path / "vitt.pt"
    code = cli.main(["export", "eupe_vitt16", "--weights", "random", "--format", "torchscript", "--output", str(out),
                     "--size", "32x48"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert f"wrote {out}" in printed and printed.count("(ok,") == 3


def test_export_onnx_optimize(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="--optimize needs onnxruntime")
    pytest.importorskip("onnxscript", reason="the default (dynamo) ONNX exporter needs onnxscript")
    out = tmp_path / "vitt.ort.onnx"
    code = cli.main(["export", "eupe_vitt16", "--weights", "random", "--format", "onnx", "--optimize",
                     "--output", str(out), "--size", "32x48"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and printed.count("(ok,") == 3


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = cli.main(["export", "eupe_convnext_tiny", "--weights", "random", "--format", "hf",
                     "--output", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert code == 2 and "ViTs only" in err and len(err.strip().splitlines()) == 1
    code = cli.main(["export", "eupe_vitt16", "--weights", "random", "--format", "torchscript",
                     "--output", str(tmp_path / "x.pt"), "--size", "250"])
    assert code == 2 and "not a multiple of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "eupe_vitt16", "--format", "torchscript", "--output", "x.pt", "--size", "big"])


def test_export_checkpoint_with_projectors_keeps_them(tmp_path, capsys):
    import eupe
    from eupe.models import Projectors

    model = eupe.create_model("eupe_vitt16")
    state = dict(model.state_dict())
    state.update({f"projectors.{k}": v for k, v in Projectors.build(192, 16, {"t": 8}).state_dict().items()})
    ckpt = tmp_path / "full.pt"
    torch.save(state, ckpt)
    out = tmp_path / "full.safetensors"
    assert cli.main(["export", "eupe_vitt16", "--weights", str(ckpt), "--format", "safetensors",
                     "--output", str(out)]) == 0
    assert load_file(str(out)).keys() == state.keys()
    # A checkpoint of another architecture: a one-line error, exit code 2, nothing written.
    small = tmp_path / "small.pt"
    torch.save(eupe.create_model("eupe_vitt16", depth=1).state_dict(), small)
    bad = tmp_path / "bad.safetensors"
    assert cli.main(["export", "eupe_vitt16", "--weights", str(small), "--format", "safetensors",
                     "--output", str(bad)]) == 2
    assert "Cannot load" in capsys.readouterr().err and not bad.exists()
