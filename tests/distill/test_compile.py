"""Compiled distillation (student.compile): the same losses as eager, across stage 3's changing scales (one static
graph per scale), with gradient checkpointing, and resumed from a checkpoint written by a compiled run. The backend is aot_eager (the
graph capture and autograd of torch.compile without inductor's code generation, which takes minutes on a CPU
runner); inductor's speed is measured by benchmarks/bench_distill.py."""

import pytest
import torch
from torch._dynamo import register_backend

from tests.distill.run_tiny import build
from tests.distill.test_trainer import losses

GRAPHS = []


@register_backend
def eupe_test_recording_backend(graph, example_inputs):
    """aot_eager that records each graph it is given: proof that compilation reached the student."""
    from torch._dynamo.backends.debugging import aot_eager

    GRAPHS.append(graph)
    return aot_eager(graph, example_inputs)

ARGS = ["train.iterations=6", "output.checkpoint_every=3", "data.student_scales=[16, 32]",
        "student.grad_checkpointing=true", "train.seed=1"]  # seed 1: its first steps draw both scales
COMPILED = ["student.compile=true", "student.compile_backend=eupe_test_recording_backend"]


def _trajectory(folder):
    return torch.tensor([[row[k] for k in row if k != "step"] for row in losses(folder)])


def test_compiled_training_follows_eager_across_scales_and_resumes(tmp_path):
    build(str(tmp_path / "eager"), ARGS).run()
    compiled = build(str(tmp_path / "compiled"), ARGS + COMPILED)
    scales = {compiled.scales(step)[0] for step in range(6)}
    assert scales == {16, 32}, "the seeded scales must exercise both shapes"
    original = compiled.train_step

    def stop_after_the_checkpoint(step):
        if step == 4:
            raise KeyboardInterrupt
        return original(step)

    compiled.train_step = stop_after_the_checkpoint
    with pytest.raises(KeyboardInterrupt):
        compiled.run()
    assert (tmp_path / "compiled" / "ckpt-00000003.pt").is_file()
    assert len(GRAPHS) == len(scales), "one static graph per scale: what the training step runs is compiled"
    build(str(tmp_path / "compiled"), ARGS + COMPILED).run()  # resumes from step 3 (same process: cached graphs)

    eager, resumed = _trajectory(tmp_path / "eager"), _trajectory(tmp_path / "compiled")
    assert eager.shape == resumed.shape == (6, eager.shape[1])
    assert torch.allclose(eager, resumed, rtol=1e-4, atol=1e-5), (eager, resumed)
    exported = torch.load(tmp_path / "compiled" / "student.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in exported), "compiling must not rename the exported weights"
