"""VLM training-step benchmark (not a test). Run: python benchmarks/bench_vlm.py [--shape small|7b]

A LLaVA-1.5 training step on ``transformers.Trainer`` (``Trainer.training_step`` on a collated batch, then the
Trainer's AdamW step), against the sum of its parts timed in isolation: the frozen EUPE tower's forward, the
projector's forward+backward, the language model's forward+backward from the merged input embeddings, and the
optimizer step. Interleaved rounds, medians; target: step / parts <= 1.15 (what the distillation trainer meets).
Then the peak memory of the process (CPU: max RSS; CUDA: max allocated).

Weights are random (their values do not change the cost): the models are built from configs, so nothing is
downloaded. Shapes:

* ``small`` (the CPU demo's stage (b)): SmolLM2-135M (Llama, 30 layers, width 576, vocabulary 49,152), ViT-T/16 at
  64 px (16 visual tokens), 40 text tokens, batch 8, fp32.
* ``7b`` (the paper's stage (b); CUDA only): Vicuna-7B (Llama, 32 layers, width 4096, vocabulary 32,000), ViT-B/16
  at 384 px (576 visual tokens), 512 text tokens, batch 16 per GPU, bf16 autocast, gradient checkpointing of the LM.

Memory plan at the paper's scale (stage (b): the projector and the 7B LM train, the tower is frozen):

* States: fp32 master weights + gradients + two AdamW moments = 16 B/param, 6.7B params = 108 GB. With FSDP
  ``full_shard`` (``--set fsdp="full_shard auto_wrap"``) or DeepSpeed ZeRO-3 over 8 GPUs: 13.5 GB per GPU; ZeRO-2
  (states and gradients sharded, weights replicated): 27 + 81 / 8 = 37 GB per GPU.
* Activations with gradient checkpointing (``gradient_checkpointing: true``): one saved block input per layer,
  1,088 tokens x 4096 x 2 B (bf16) = 8.9 MB x 32 layers = 0.29 GB per sample, plus one layer's recompute (attention
  and the 11,008-wide MLP, ~0.2 GB per sample): ~0.5 GB per sample, 8 GB at LLaVA-1.5's 16 per GPU. The logits
  (1,088 x 32,000 in fp32) add 0.14 GB per sample unless the loss is chunked.
* The frozen ViT-B tower in bf16: 0.17 GB, replicated. Total per 80 GB GPU with ZeRO-3 and 16 samples: ~25 GB,
  which is why LLaVA-1.5 trains stage (b) on 8 x 80 GB; without checkpointing the activations alone (~4 GB per
  sample) would not fit 16 per GPU. Stage (a) trains 21M projector parameters: memory is activations only.

``--shape 7b`` on one GPU measures the unsharded case (108 GB of states), an upper bound of the plan above.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eupe.utils.device import autocast, resolve_device  # noqa: E402
from eupe.vlm.data import supervised_logits_inputs  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """One benchmarked configuration: the LM's Llama shape, the tower, the sequence and the batch."""

    layers: int
    width: int
    mlp: int
    heads: int
    kv_heads: int
    vocab: int
    tower: str
    image_size: int
    text_tokens: int
    labelled_tokens: int  # the last text tokens of each sample, which the loss reads (the replies)
    batch: int
    amp: str
    checkpointing: bool


SHAPES = {
    "small": Shape(layers=30, width=576, mlp=1536, heads=9, kv_heads=3, vocab=49152, tower="eupe_vitt16",
                   image_size=64, text_tokens=40, labelled_tokens=9, batch=8, amp="fp32", checkpointing=False),
    "7b": Shape(layers=32, width=4096, mlp=11008, heads=32, kv_heads=32, vocab=32000, tower="eupe_vitb16",
                image_size=384, text_tokens=512, labelled_tokens=256, batch=16, amp="bf16", checkpointing=True),
}


def build(shape: Shape, device: torch.device) -> Any:
    """A LLaVA model with an EUPE tower and a random Llama LM of ``shape``, and its image token id."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from eupe.vlm.tower import VISION_FEATURE_LAYER, VISION_FEATURE_SELECT_STRATEGY, EupeVisionConfig

    vision = EupeVisionConfig(eupe_model=shape.tower, image_size=shape.image_size)
    text = LlamaConfig(vocab_size=shape.vocab + 2, hidden_size=shape.width, intermediate_size=shape.mlp,
                       num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                       num_key_value_heads=shape.kv_heads, tie_word_embeddings=shape.width < 1024)
    tokens = (shape.image_size // 16) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=shape.vocab,
                         image_seq_length=tokens, vision_feature_layer=VISION_FEATURE_LAYER,
                         vision_feature_select_strategy=VISION_FEATURE_SELECT_STRATEGY)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.requires_grad_(False)
    if shape.checkpointing:
        model.model.language_model.gradient_checkpointing_enable()
    return model.train()


def batch_for(shape: Shape, model: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """A collated stage-(b) batch: the image tokens first, then text, its last ``labelled_tokens`` labelled."""
    tokens = model.config.image_seq_length
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(0, shape.vocab, (shape.batch, shape.text_tokens), generator=generator)
    input_ids = torch.cat([torch.full((shape.batch, tokens), model.config.image_token_id), text], dim=1)
    labels = input_ids.clone()
    labels[:, : tokens + shape.text_tokens - shape.labelled_tokens] = -100
    pixels = torch.rand(shape.batch, 3, shape.image_size, shape.image_size, generator=generator)
    return {k: v.to(device) for k, v in dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                             labels=labels, pixel_values=pixels).items()}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_step(shape: Shape, rounds: int, device: torch.device) -> None:
    from transformers import Trainer, TrainingArguments

    model = build(shape, device)
    batch = batch_for(shape, model, device)
    bf16 = shape.amp == "bf16"
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=shape.batch, learning_rate=2e-5,
                                 optim="adamw_torch", bf16=bf16, use_cpu=device.type == "cpu", report_to=[],
                                 weight_decay=0.0)
        trainer = Trainer(model=model, args=args)
        trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which this drives by hand
    optimizer = trainer.optimizer
    inner = model.model
    image_tokens = batch["input_ids"] == model.config.image_token_id

    def tower() -> torch.Tensor:
        with torch.no_grad(), autocast(shape.amp, device):
            return inner.vision_tower(batch["pixel_values"]).last_hidden_state

    features = tower()

    def projector() -> torch.Tensor:
        with autocast(shape.amp, device):
            out = inner.multi_modal_projector(features)
        out.float().sum().backward()
        return out

    projected = projector().detach()
    embeds = inner.get_input_embeddings()(batch["input_ids"]).detach()
    embeds = embeds.masked_scatter(image_tokens[..., None], projected.to(embeds.dtype)).requires_grad_(True)

    def language_model() -> None:
        with autocast(shape.amp, device):
            out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()

    supervised = {**batch, **supervised_logits_inputs(batch["labels"])}

    def full_step(inputs: dict[str, torch.Tensor] = batch) -> None:
        trainer.training_step(model, inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def optimizer_step() -> None:
        optimizer.step()

    full_step()  # warm-up: allocations and AdamW's lazy states
    parts, fulls, fulls_supervised = [], [], []
    for _ in range(rounds):
        t = timed(tower, device)
        p = timed(projector, device)
        lm = timed(language_model, device)
        o = timed(optimizer_step, device)
        optimizer.zero_grad(set_to_none=True)
        parts.append((t, p, lm, o))
        fulls.append(timed(full_step, device))
        fulls_supervised.append(timed(lambda: full_step(supervised), device))
    t, p, lm, o = (statistics.median(r[i] for r in parts) for i in range(4))
    full, full_supervised = statistics.median(fulls), statistics.median(fulls_supervised)
    tokens = model.config.image_seq_length + shape.text_tokens
    print(f"[step] {shape.tower} @ {shape.image_size}px + Llama {shape.layers}x{shape.width}, batch {shape.batch} x "
          f"{tokens} tokens, {shape.amp}{', checkpointing' if shape.checkpointing else ''}, {device.type}: tower "
          f"{t * 1e3:.1f} ms, projector fwd+bwd {p * 1e3:.1f} ms, LM fwd+bwd {lm * 1e3:.1f} ms, optimizer "
          f"{o * 1e3:.1f} ms; sum {(t + p + lm + o) * 1e3:.1f} ms; Trainer step {full * 1e3:.1f} ms; ratio "
          f"{full / (t + p + lm + o):.3f} (target <= 1.15); {shape.batch / full:.1f} samples/s")
    print(f"[supervised logits] LM head at the {shape.labelled_tokens} labelled of {tokens} positions "
          f"(supervised_logits): Trainer step {full_supervised * 1e3:.1f} ms = {full_supervised / full:.3f}x the "
          f"step above; {shape.batch / full_supervised:.1f} samples/s")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"[memory] peak allocated {peak:.1f} GiB")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
        print(f"[memory] peak RSS of this process {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="", help="cpu or cuda (default: CUDA when available)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device or None)
    shape = SHAPES[args.shape]
    if args.shape == "7b" and device.type != "cuda":
        sys.exit("bench_vlm: --shape 7b needs a GPU (its states alone take 108 GB); run --shape small on a CPU")
    bench_step(shape, args.rounds, device)


if __name__ == "__main__":
    main()
