"""EUPE VLM folders as an lmms-eval model: ``lmms-eval --model eupe_llava --model_args pretrained=DIR --tasks pope``.

lmms-eval (0.7+) finds the model through the ``lmms_eval.models`` entry point of this package, which names
:func:`lmms_eval_manifest`; the class it returns, :class:`EupeLlava`, is a "simple" lmms-eval model: it gets each
task's prompt as text with the task's ``doc_to_visual``, and renders and generates exactly as
:func:`eupe.vlm.evaluate.run_vlm_eval` does (:func:`~eupe.vlm.evaluate.chat_prompt`,
:func:`~eupe.vlm.evaluate.generate_replies`).

lmms-eval is imported only when the manifest or the class is asked for, so this module imports without it;
:func:`generate_for_requests`, the request handling of ``EupeLlava.generate_until``, works on any objects with
lmms-eval's ``args``. :mod:`.evaluate` (which needs transformers 5) is imported when used too: lmms-eval loads every
plugin's entry point when it starts, and one that fails to import takes the plugins after it down with it.

``model_args``: ``pretrained`` (the folder), ``device`` (also lmms-eval's ``--device``; default: CUDA when
available), ``amp`` (``auto``: bf16 autocast on CUDA, fp32 elsewhere; ``bf16``; ``fp32``) and ``batch_size`` (also
lmms-eval's ``--batch_size``; an integer). One process only: lmms-eval's data-parallel launch (``accelerate
launch``) is not supported.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

from PIL import Image
from tqdm import tqdm

from ..utils.device import AMP_CHOICES
from ..utils.optional import require

MODEL_ID = "eupe_llava"
CLASS_PATH = f"{__name__}.EupeLlava"
LMMS_EVAL_INSTALL = "pip install lmms-eval"


def lmms_eval_manifest() -> Any:
    """The ``lmms_eval.models`` entry point: an lmms-eval ``ModelManifest`` naming :class:`EupeLlava`."""
    registry = require("lmms_eval.models.registry_v2", "The eupe_llava lmms-eval model", install=LMMS_EVAL_INSTALL)
    return registry.ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)


def generate_for_requests(model: Any, processor: Any, requests: Sequence[Any],
                          docs: Mapping[str, Mapping[str, Sequence[Any]]], *, batch_size: int = 1,
                          amp: str = "auto", on_reply: Callable[[Any, str], None] | None = None) -> list[str]:
    """Replies to lmms-eval ``generate_until`` requests, in their order.

    Each request's ``args`` are lmms-eval's ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``; its
    images are ``doc_to_visual(docs[task][split][doc_id])`` and come before the context in the user turn (a context
    that already holds the image token keeps its own placement). Requests with equal ``gen_kwargs`` are batched
    together, under the autocast of ``amp``. ``gen_kwargs`` used: ``until``, ``max_new_tokens`` (lmms-eval's
    default 1024 when absent), ``temperature`` (sampling when above 0, with ``top_p``) and ``num_beams``; others are
    model-specific and ignored, as lmms-eval's own LLaVA models do. ``on_reply(request, reply)`` runs for each reply
    (lmms-eval's cache hook).
    """
    from .evaluate import chat_prompt, generate_replies

    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
    replies: list[str] = [""] * len(requests)
    image_token = processor.image_token
    with tqdm(total=len(requests), unit="request", desc=MODEL_ID, disable=None) as bar:
        for indices in groups.values():
            settings = _generation_settings(requests[indices[0]].args[1])
            for start in range(0, len(indices), batch_size):
                batch = indices[start:start + batch_size]
                prompts, images = [], []
                for i in batch:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = _images(doc_to_visual(docs[task][split][doc_id]), task)
                    prompts.append(chat_prompt(processor, context, 0 if image_token in context else len(visuals)))
                    images.append(visuals)
                batch_replies = generate_replies(model, processor, prompts, images, amp=amp, **settings)
                for i, reply in zip(batch, batch_replies):
                    replies[i] = reply
                    if on_reply is not None:
                        on_reply(requests[i], reply)
                bar.update(len(batch))
    return replies


def _generation_settings(gen_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """lmms-eval's ``generation_kwargs`` as :func:`~eupe.vlm.evaluate.generate_replies` arguments."""
    from .evaluate import LMMS_EVAL_MAX_NEW_TOKENS

    until = gen_kwargs.get("until") or ()
    settings: dict[str, Any] = {
        "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or LMMS_EVAL_MAX_NEW_TOKENS),
        "until": (until,) if isinstance(until, str) else tuple(until),
        "num_beams": int(gen_kwargs.get("num_beams") or 1),
    }
    temperature = float(gen_kwargs.get("temperature") or 0)
    if temperature > 0:
        settings.update(do_sample=True, temperature=temperature, top_p=gen_kwargs.get("top_p"))
    return settings


def _images(visuals: Any, task: str) -> list[Image.Image]:
    """A task's ``doc_to_visual`` output as a list of images; other media are refused with the reason."""
    visuals = [] if visuals is None else list(visuals)
    others = sorted({type(v).__name__ for v in visuals if not isinstance(v, Image.Image)})
    if others:
        raise ValueError(f"task {task!r} gives {', '.join(others)} visuals; {MODEL_ID} reads images only "
                         "(video and audio tasks are not supported)")
    return visuals


def _define_model_class() -> type:
    """:class:`EupeLlava`, an ``lmms_eval.api.model.lmms`` subclass (lmms-eval is imported here)."""
    lmms = require("lmms_eval.api.model", "The eupe_llava lmms-eval model", install=LMMS_EVAL_INSTALL).lmms
    from .evaluate import load_vlm

    class EupeLlava(lmms):
        """An EUPE VLM folder (``pretrained``) as a simple lmms-eval model; see the module docstring."""

        is_simple = True

        def __init__(self, pretrained: str, device: str | None = None, amp: str = "auto",
                     batch_size: int | str = 1, **unknown: Any) -> None:
            super().__init__()
            if unknown:
                raise TypeError(f"{MODEL_ID} got unknown model_args {sorted(unknown)}; it takes pretrained, device, "
                                "amp and batch_size")
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise NotImplementedError(f"{MODEL_ID} runs in one process; launch lmms-eval without accelerate / "
                                          "torchrun and pick the GPU with device=cuda:N")
            try:
                self.batch_size = int(batch_size)
            except ValueError:
                raise ValueError(f"{MODEL_ID} needs an integer batch_size, got {batch_size!r}") from None
            if amp not in AMP_CHOICES:
                raise ValueError(f"{MODEL_ID}: amp={amp!r} is not one of {list(AMP_CHOICES)}")
            self.amp = amp
            self.model, self.processor = load_vlm(pretrained, device=device)

        def generate_until(self, requests: list) -> list[str]:
            return generate_for_requests(
                self.model, self.processor, requests, self.task_dict, batch_size=self.batch_size, amp=self.amp,
                on_reply=lambda request, reply: self.cache_hook.add_partial(
                    "generate_until", (request.args[0], request.args[1]), reply))

        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
            raise NotImplementedError(f"{MODEL_ID} implements generate_until only; the paper's tasks (pope, gqa, "
                                      "textvqa_val, mme, scienceqa_img, realworldqa) all generate")

        def generate_until_multi_round(self, requests: list) -> list[str]:
            raise NotImplementedError(f"{MODEL_ID} answers single-turn tasks only (generate_until)")

    EupeLlava.__qualname__ = "EupeLlava"  # where lmms-eval's class path finds it
    return EupeLlava


def __getattr__(name: str) -> Any:
    if name == "EupeLlava":
        cls = globals()["EupeLlava"] = _define_model_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
