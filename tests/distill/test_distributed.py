"""Two CPU processes (gloo, torchrun) follow the same loss trajectory as one process with the same global batch,
with DDP (students, eager and compiled) and with FSDP2 (the proxy's sharding)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from eupe.distill.distributed import keep_gradient_strides
from eupe.distill.monitor import read_metrics
from tests.distill.run_tiny import build

REPO = Path(__file__).resolve().parents[2]
KEYS = ("loss", "loss/ta/cls", "loss/ta/patch", "loss/tb/cls", "loss/tb/patch")
ARGS = ["train.iterations=4", "train.global_batch_size=4", "train.lr=1e-3", "output.checkpoint_every=2"]


def trajectory(folder):
    return torch.tensor([[row[k] for k in KEYS] for row in read_metrics(Path(folder) / "metrics.jsonl")])


def test_two_processes_match_one_with_ddp_fsdp_and_compiled_ddp(tmp_path):
    build(str(tmp_path / "single"), ARGS + ["train.parallel=none"]).run()  # one thread, as each rank
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TINY_STRATEGIES": "ddp,fsdp,ddp_compiled"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.distill.run_tiny", str(tmp_path / "multi"), *ARGS]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Grad strides do not match bucket view strides" not in proc.stderr
    single = trajectory(tmp_path / "single")
    assert single.shape == (4, len(KEYS))
    for strategy in ("ddp", "fsdp", "ddp_compiled"):
        multi = trajectory(tmp_path / "multi" / strategy)
        assert torch.allclose(single, multi, rtol=1e-5, atol=1e-5), (strategy, single, multi)
        assert (tmp_path / "multi" / strategy / "student.pt").is_file()


def test_gradients_keep_the_strides_of_their_parameters(tmp_path):
    student = build(str(tmp_path), ["train.parallel=none"]).student
    keep_gradient_strides(student)
    for batch in (1, 2):  # batch 1: the tokens' gradients would be slices of the [1, N, C] token gradient
        student.zero_grad(set_to_none=True)
        loss = sum(cls.sum() + patches.sum() for cls, patches in student(torch.rand(batch, 3, 32, 32)).values())
        loss.backward()
        mismatched = [name for name, p in student.named_parameters()
                      if p.grad is not None and p.grad.stride() != p.stride()]
        assert mismatched == [], batch
