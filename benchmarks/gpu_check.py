"""Everything that needs a GPU, in one run: CUDA parity, bf16 and torch.compile, throughput, distillation memory.

    python benchmarks/gpu_check.py --output-dir gpu_report --reference-repo PATH/TO/facebookresearch-EUPE

Each section runs in its own process under its own time limit, so one failure or hang does not cost the others;
everything printed goes to ``<output-dir>/gpu_check.log`` and a pass/fail line per section ends the log.
Sections (``--sections`` picks some):

* ``correctness``: the reference-parity tests (``tests/models/test_reference_parity.py``) on CUDA in fp32 with
  TF32 off; bf16 autocast and a bf16 copy of all six models against fp32 (cosine); ``torch.compile`` (fullgraph)
  against eager.
* ``stage1``: the stage-1 config under ``torchrun`` (FSDP2, activation checkpointing, bf16) with the real 1.9B
  proxy shape and a random ViT-L teacher, a few steps at the paper's scales: step time and peak memory.
* ``stage2``: the stage-2 config (ViT-B student, random 1.9B proxy teacher, batch 128 at 256 from JPEG files),
  with and without data worker processes: step time and peak memory.
* ``forward``: ``bench_forward.py`` on CUDA (this package vs the naive baseline, the reference code and
  transformers' ``DINOv3ViTModel``).
* ``bench``: ``eupe bench`` with the CUDA backends (fp32, bf16, compiled bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"correctness": 90, "stage1": 160, "stage2": 300, "forward": 90, "bench": 120}  # time limits, s


def check_correctness(env: dict[str, str], timeout: float) -> None:
    import torch

    sys.path.insert(0, str(REPO))
    import eupe

    # parity with the reference outputs: the repository's own tests, run on the GPU
    subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/models/test_reference_parity.py"], check=True,
                   cwd=REPO, env={**env, "EUPE_TEST_DEVICE": "cuda"}, timeout=timeout / 2)
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}")
    failures = []
    with torch.inference_mode():
        x = torch.rand(4, 3, 256, 256, device=dev)
        for name in eupe.list_models(pretrained=True):
            torch.manual_seed(0)
            model = eupe.create_model(name).eval().to(dev)
            for m in model.modules():  # LayerScale at its released scale, so every branch counts
                if getattr(m, "gamma", None) is not None:
                    m.gamma.data.fill_(0.1)
            ref = model.forward_features(x)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                amp = model.forward_features(x)
            half = model.to(torch.bfloat16).forward_features(x.to(torch.bfloat16))
            cos = {}
            for label, out in (("autocast", amp), ("bf16 weights", half)):
                for key in ("x_norm_clstoken", "x_norm_patchtokens"):
                    c = torch.nn.functional.cosine_similarity(out[key].float().flatten(1), ref[key].flatten(1))
                    cos[f"{label} {key}"] = c.min().item()
            print(f"{name}: bf16 min cosine to fp32 " + ", ".join(f"{k} {v:.4f}" for k, v in cos.items()))
            if min(cos.values()) < 0.99:
                failures.append(f"{name} bf16")

        for name in ("eupe_vits16", "eupe_convnext_tiny"):
            torch.manual_seed(0)
            model = eupe.create_model(name).eval().to(dev)
            compiled = torch.compile(model.forward_features, fullgraph=True)
            start = time.perf_counter()
            got = compiled(x)["x_norm_patchtokens"]
            seconds = time.perf_counter() - start
            diff = (got - model.forward_features(x)["x_norm_patchtokens"]).abs().max().item()
            print(f"{name}: torch.compile(fullgraph) vs eager max abs diff {diff:.2e} (compiled in {seconds:.0f} s)")
            if diff > 1e-3:
                failures.append(f"{name} compile")
    if failures:
        raise SystemExit(f"FAILED: {failures}")


def write_images(folder: Path, n: int) -> None:
    """JPEG files of smooth random colour fields (the data loader's real work: decode, crop, augment)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((480, 360), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)


def run_distill(command: list[str], out: Path, env: dict[str, str], timeout: float) -> None:
    subprocess.run(command, check=True, cwd=REPO, env=env, timeout=timeout)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step_time"] for r in rows[2:]]  # the first steps include CUDA/cuBLAS warm-up
    print(f"{out.name}: {summary['steps']} steps, median step {statistics.median(steps):.3f} s "
          f"(min {min(steps):.3f}), peak CUDA memory {summary['peak_memory_mb'] / 1024:.1f} GiB, "
          f"final loss {summary['final_loss']:.4f}")


COMMON = ["output.progress=false", "output.tensorboard=false", "output.checkpoint_every=100000",
          "train.norm_iterations=2", "output.log_every=1"]
RANDOM_PROXY = ["teachers.0.model_kwargs={pretrained: false}", "teachers.0.weights=null"]  # stage 2's teacher
# stage 1: a random ViT-L at PE-G's 448 stands in for the three teachers (no weights here)
STAGE1_TEACHER = ("teachers=[{kind: eupe, name: vitl, model: vitl16, input_size: 448, "
                  "model_kwargs: {pretrained: false}}]")


def overrides(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def check_stage1(scratch: Path, env: dict[str, str], timeout: float) -> None:
    write_images(scratch / "images", 256)
    out = scratch / "stage1"
    settings = [STAGE1_TEACHER, *COMMON, f"data.source={scratch / 'images'}", f"output.dir={out}",
                "train.iterations=8", "train.global_batch_size=32", "data.workers=16"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "eupe.cli.main",
               "distill", "--config", "stage1", *overrides(settings)]
    run_distill(command, out, env, timeout)


def check_stage2(scratch: Path, env: dict[str, str], timeout: float) -> None:
    write_images(scratch / "images", 512)
    for workers in (16, 0):
        out = scratch / f"stage2_workers{workers}"
        command = [sys.executable, "-m", "eupe.cli.main", "distill", "--config", "stage2", *overrides([
            *COMMON, *RANDOM_PROXY, f"data.source={scratch / 'images'}", f"output.dir={out}",
            "train.iterations=14", "train.global_batch_size=128", f"data.workers={workers}"])]
        run_distill(command, out, env, timeout / 2)


def check_forward(reference: Path | None, env: dict[str, str], timeout: float) -> None:
    runs = [["--model", "eupe_vits16", "--amp", "bf16", "--batch", "256"],
            ["--model", "eupe_vitb16", "--amp", "bf16", "--batch", "128"],
            ["--model", "eupe_vits16", "--amp", "fp32", "--batch", "64"]]
    for args in runs:
        command = [sys.executable, str(REPO / "benchmarks" / "bench_forward.py"), "--device", "cuda", "--size", "256",
                   "--rounds", "20", "--warmup", "3", "--transformers", *args]
        if reference:
            command += ["--reference-repo", str(reference)]
        subprocess.run(command, check=True, cwd=REPO, env=env, timeout=timeout / len(runs))


def check_bench(scratch: Path, env: dict[str, str], timeout: float) -> None:
    eager = ["--models", "eupe_vitt16,eupe_vits16,eupe_vitb16,eupe_convnext_tiny,eupe_convnext_small,"
             "eupe_convnext_base", "--backends", "cuda,cuda-bf16", "--batch-sizes", "1,64"]
    compiled = ["--models", "eupe_vits16,eupe_vitb16", "--backends", "cuda-bf16,cuda-compile-bf16",
                "--batch-sizes", "64"]
    for i, args in enumerate((eager, compiled)):
        command = [sys.executable, "-m", "eupe.cli.main", "bench", "--sizes", "256", "--rounds", "15", *args,
                   "--output-dir", str(scratch / f"bench{i}")]
        subprocess.run(command, check=True, cwd=REPO, env=env, timeout=timeout * (0.4 if i == 0 else 0.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("gpu_report"))
    parser.add_argument("--reference-repo", type=Path, default=None, help="a clone of facebookresearch/EUPE")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {list(SECTIONS)}")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section in this process
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    if args.section:
        scratch = Path(tempfile.mkdtemp(prefix=f"gpu_{args.section}_"))
        limit = SECTIONS[args.section] - 10
        {"correctness": lambda: check_correctness(env, limit),
         "stage1": lambda: check_stage1(scratch, env, limit),
         "stage2": lambda: check_stage2(scratch, env, limit),
         "forward": lambda: check_forward(args.reference_repo, env, limit),
         "bench": lambda: check_bench(scratch, env, limit)}[args.section]()
        return
    args.output_dir.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    with open(args.output_dir / "gpu_check.log", "w") as log:
        for name in args.sections.split(","):
            start = time.perf_counter()
            command = [sys.executable, __file__, "--section", name]
            if args.reference_repo:
                command += ["--reference-repo", str(args.reference_repo)]
            print(f"\n===== {name} =====", file=log, flush=True)
            # own process group: a timed-out section is killed with its children (torchrun workers)
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                code = process.wait(timeout=SECTIONS[name])
                outcomes[name] = "passed" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                outcomes[name] = f"timed out after {SECTIONS[name]} s"
            outcomes[name] += f", {time.perf_counter() - start:.0f} s"
            print(f"{name}: {outcomes[name]}", flush=True)
        print("\n===== summary =====\n" + "\n".join(f"{k}: {v}" for k, v in outcomes.items()), file=log)


if __name__ == "__main__":
    main()
