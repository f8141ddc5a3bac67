"""Hugging Face ``transformers`` format for the ViTs: a ``DINOv3ViTModel`` folder, and the way back.

The folder holds ``config.json`` (``model_type: dinov3_vit``) and ``model.safetensors`` in the Hub's DINOv3
key layout (``embeddings.*``, ``layer.N.*``, ``norm.*``), so transformers-based code (e.g. a VLM's vision
tower) loads it with ``DINOv3ViTModel.from_pretrained``. Differences that the mapping bridges:

* transformers splits the fused ``qkv`` projection into ``q_proj``/``k_proj``/``v_proj``; EUPE's masked key
  bias becomes ``key_bias: false`` (the masked bias is exactly zero);
* LayerScale is always present in transformers (``lambda1``); a ViT without LayerScale gets ones;
* transformers recomputes RoPE periods from ``rope_theta`` with per-axis coordinate normalisation, so only
  ViTs whose RoPE follows ``base`` and ``normalize_coords='separate'`` convert (all EUPE ViTs do);
* the SwiGLU FFN maps ``w1, w2, w3`` to ``gate_proj, up_proj, down_proj`` with ``hidden_act: silu``.
The checkpoint's ``projectors.*`` adapter heads are not part of a transformers model: they are written beside
it as ``projectors.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..layers import SwiGLUFFN
from ..layers.attention import qkv_bias
from ..loading import load_into, require_finite_weights
from ..models import VisionTransformer
from ..models.vision_transformer import NORM_EPS
from ..utils.io import atomic_path, atomic_write_json
from ..utils.optional import require
from .prepare import ExportError, verification_sizes
from .verify import VerificationReport, verify_export

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROJECTORS_FILE = "projectors.safetensors"
PREPROCESSOR_FILE = "preprocessor_config.json"
_PREFIX_RENAMES = {"patch_embed.proj.": "embeddings.patch_embeddings.", "norm.": "norm."}
_BLOCK_RENAMES = {  # eupe block sub-key -> transformers layer sub-key
    "norm1.": "norm1.", "norm2.": "norm2.", "attn.proj.": "attention.o_proj.",
    "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.": "mlp.up_proj.", "mlp.fc2.": "mlp.down_proj.",
    "mlp.w1.": "mlp.gate_proj.", "mlp.w2.": "mlp.up_proj.", "mlp.w3.": "mlp.down_proj.",
}


def _require_vit(model: nn.Module) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise ExportError(
            f"The Hugging Face format (transformers DINOv3ViTModel) exists for the ViTs only, not for "
            f"{type(model).__name__}; export ConvNeXt models as onnx, executorch, torchscript, pt2 or safetensors."
        )
    rope = model.rope_embed
    if rope.base is None or rope.normalize_coords != "separate":
        raise ExportError("transformers' DINOv3 RoPE needs pos_embed_rope_base and normalize_coords='separate'.")
    n = rope.head_dim // 4
    expected = rope.base ** (4 * torch.arange(n, dtype=torch.float32) / rope.head_dim)
    if not torch.allclose(rope.periods.float().cpu(), expected, rtol=1e-5):
        raise ExportError("This model's RoPE periods were changed from the values implied by its base; "
                          "transformers recomputes them from rope_theta, so the export would not match.")
    return model


def _split_qkv_bias(qkv: nn.Linear) -> list[Tensor | None]:
    bias = qkv_bias(qkv)
    return [None, None, None] if bias is None else list(bias.detach().chunk(3))


def hf_config(model: nn.Module) -> dict:
    """The ``DINOv3ViTConfig`` fields describing ``model`` (a :class:`VisionTransformer`)."""
    vit = _require_vit(model)
    block = vit.blocks[0]
    gated = isinstance(block.mlp, SwiGLUFFN)
    q_bias, k_bias, v_bias = _split_qkv_bias(block.attn.qkv)
    k_bias_used = any(b is not None and bool(b.any()) for b in
                      (_split_qkv_bias(blk.attn.qkv)[1] for blk in vit.blocks))
    eps = vit.norm.eps
    rope = vit.rope_embed
    return {
        "architectures": ["DINOv3ViTModel"],
        "model_type": "dinov3_vit",
        "patch_size": vit.patch_size,
        "hidden_size": vit.embed_dim,
        "intermediate_size": (block.mlp.w1 if gated else block.mlp.fc1).out_features,
        "num_hidden_layers": len(vit.blocks),
        "num_attention_heads": vit.num_heads,
        "hidden_act": "silu" if gated else "gelu",
        "use_gated_mlp": gated,
        "layer_norm_eps": eps,
        "rope_theta": rope.base,
        "image_size": 256,
        "num_channels": vit.patch_embed.in_chans,
        "query_bias": q_bias is not None,
        "key_bias": k_bias_used,
        "value_bias": v_bias is not None,
        "proj_bias": block.attn.proj.bias is not None,
        "mlp_bias": (block.mlp.w1 if gated else block.mlp.fc1).bias is not None,
        "layerscale_value": block.ls1.init_values if block.ls1 is not None else 1.0,
        "num_register_tokens": vit.n_storage_tokens,
        "pos_embed_shift": rope.shift_coords,
        "pos_embed_jitter": rope.jitter_coords,
        "pos_embed_rescale": rope.rescale_coords,
        "initializer_range": 0.02,
        "drop_path_rate": 0.0,
        "torch_dtype": "float32",
    }


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model``'s weights in the Hub's DINOv3ViTModel key layout (contiguous fp32 copies)."""
    vit = _require_vit(model)
    sd = {k: v.detach() for k, v in vit.state_dict().items()}
    dim = vit.embed_dim
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"].reshape(1, 1, dim),
        "embeddings.register_tokens": sd["storage_tokens"] if vit.n_storage_tokens else torch.zeros(1, 0, dim),
        "embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    config = hf_config(vit)
    for i, blk in enumerate(vit.blocks):
        prefix = f"layer.{i}."
        for name, weight, bias in zip(("q", "k", "v"), blk.attn.qkv.weight.detach().chunk(3),
                                      _split_qkv_bias(blk.attn.qkv)):
            out[f"{prefix}attention.{name}_proj.weight"] = weight
            if bias is not None and (name != "k" or config["key_bias"]):
                out[f"{prefix}attention.{name}_proj.bias"] = bias
        for key, value in sd.items():
            if not key.startswith(f"blocks.{i}.") or ".attn.qkv." in key:
                continue
            sub = key[len(f"blocks.{i}."):]
            new = next((hf + sub[len(e):] for e, hf in _BLOCK_RENAMES.items() if sub.startswith(e)), None)
            if new is None:
                raise ExportError(f"No transformers equivalent for weight {key!r}")
            out[prefix + new] = value
        if blk.ls1 is None:
            out[f"{prefix}layer_scale1.lambda1"] = out[f"{prefix}layer_scale2.lambda1"] = torch.ones(dim)
    return {k: v.float().contiguous().clone() for k, v in out.items()}


def image_processor_config(image_size: int = 256) -> dict:
    """``preprocessor_config.json`` of the model card's transform (square bilinear resize, [0, 1], ImageNet
    mean/std) as transformers' ``ViTImageProcessor``, which ``AutoImageProcessor`` loads without torchvision."""
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": image_size, "width": image_size}, "resample": 2,  # PIL.Image.BILINEAR
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}


def save_hf(model: nn.Module, directory: str | Path, *, image_size: int = 256) -> Path:
    """Writes ``config.json`` + ``model.safetensors`` + ``preprocessor_config.json`` (the matching image processor,
    for ``image_size`` inputs) (+ ``projectors.safetensors`` if the model carries any)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"--output {directory} is a file; the hf format writes a folder.")
    tensors = to_hf_state_dict(model)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    projectors = {f"projectors.{k}": v for k, v in model.projectors.state_dict().items()}
    if projectors:
        with atomic_path(directory / PROJECTORS_FILE) as tmp:
            save_file({k: v.contiguous() for k, v in projectors.items()}, str(tmp), metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_FILE, hf_config(model))
    atomic_write_json(directory / PREPROCESSOR_FILE, image_processor_config(image_size))
    return directory


# ---- transformers -> eupe ---------------------------------------------------------------------------------------


def _arch_from_config(cfg: dict) -> dict:
    eps = cfg.get("layer_norm_eps", 1e-5)
    norm = next((name for name, value in NORM_EPS.items() if abs(value - eps) < 1e-12), None)
    if norm is None:
        raise ExportError(f"layer_norm_eps={eps} has no eupe equivalent (supported: {sorted(NORM_EPS.values())})")
    dim, inter = cfg["hidden_size"], cfg["intermediate_size"]
    gated = bool(cfg.get("use_gated_mlp", False))
    has_qkv_bias = any(cfg.get(k, d) for k, d in (("query_bias", True), ("key_bias", False), ("value_bias", True)))
    return dict(
        patch_size=cfg.get("patch_size", 16), in_chans=cfg.get("num_channels", 3), embed_dim=dim,
        depth=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
        ffn_ratio=(inter * 1.5 if gated else inter) / dim, ffn_layer="swiglu" if gated else "mlp",
        qkv_bias=has_qkv_bias, proj_bias=cfg.get("proj_bias", True), ffn_bias=cfg.get("mlp_bias", True),
        mask_k_bias=has_qkv_bias and not cfg.get("key_bias", False),
        layerscale_init=cfg.get("layerscale_value", 1.0), n_storage_tokens=cfg.get("num_register_tokens", 0),
        norm_layer=norm, pos_embed_rope_base=cfg.get("rope_theta", 100.0),
        pos_embed_rope_shift_coords=cfg.get("pos_embed_shift"),
        pos_embed_rope_jitter_coords=cfg.get("pos_embed_jitter"),
        pos_embed_rope_rescale_coords=cfg.get("pos_embed_rescale"),
    )


def from_hf_state_dict(tensors: dict[str, Tensor], cfg: dict) -> dict[str, Tensor]:
    """Maps DINOv3ViTModel weights (Hub ``layer.N.*`` or transformers-5 ``model.layer.N.*``) to eupe keys."""
    tensors = {k.removeprefix("model.") if k.startswith("model.layer.") else k: v for k, v in tensors.items()}
    dim = cfg["hidden_size"]
    out = {
        "cls_token": tensors["embeddings.cls_token"],
        "mask_token": tensors["embeddings.mask_token"].reshape(1, dim),
        "patch_embed.proj.weight": tensors["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": tensors["embeddings.patch_embeddings.bias"],
        "norm.weight": tensors["norm.weight"],
        "norm.bias": tensors["norm.bias"],
    }
    if cfg.get("num_register_tokens", 0):
        out["storage_tokens"] = tensors["embeddings.register_tokens"]
    inverse = {hf: e for e, hf in _BLOCK_RENAMES.items()
               if cfg.get("use_gated_mlp", False) == e.startswith("mlp.w") or not e.startswith("mlp.")}
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"layer.{i}."
        qkv = [tensors[f"{prefix}attention.{n}_proj.weight"] for n in "qkv"]
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(qkv)
        biases = [tensors.get(f"{prefix}attention.{n}_proj.bias") for n in "qkv"]
        if any(b is not None for b in biases):
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([b if b is not None else torch.zeros(dim) for b in biases])
        for key, value in tensors.items():
            if not key.startswith(prefix) or ".attention." in key and "o_proj" not in key:
                continue
            sub = key[len(prefix):]
            new = next((e + sub[len(hf):] for hf, e in inverse.items() if sub.startswith(hf)), None)
            if new is None:
                raise ExportError(f"Unknown transformers weight {key!r} for a DINOv3 ViT")
            out[f"blocks.{i}.{new}"] = value
    return out


def load_hf(directory: str | Path) -> VisionTransformer:
    """Builds an eupe :class:`VisionTransformer` from a transformers DINOv3ViT folder (config + safetensors);
    weights holding NaN/inf are refused."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a transformers model folder needs {CONFIG_FILE} and "
                                    f"{WEIGHTS_FILE}.")
    cfg = json.loads(config_path.read_text())
    if cfg.get("model_type") != "dinov3_vit":
        raise ExportError(f"{config_path} describes model_type={cfg.get('model_type')!r}; only 'dinov3_vit' "
                          "folders convert to eupe ViTs.")
    model = VisionTransformer(**_arch_from_config(cfg))
    state_dict = from_hf_state_dict(load_file(str(weights_path)), cfg)
    if (directory / PROJECTORS_FILE).is_file():
        state_dict.update(load_file(str(directory / PROJECTORS_FILE)))
    require_finite_weights(state_dict, str(directory), hint="it was exported from a model that diverged; export "
                           "it again from a finite checkpoint")
    load_into(model, state_dict, model_name="dinov3_vit", source=str(directory))
    return model.eval()


# ---- verification against transformers --------------------------------------------------------------------------


class TransformersFeatures(nn.Module):
    """A transformers DINOv3ViTModel with the (class, patch, storage) outputs of :class:`FeatureOutputs`."""

    def __init__(self, hf_model: nn.Module, n_storage: int) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.n_storage = n_storage

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        hidden = self.hf_model(pixel_values=x).last_hidden_state
        return hidden[:, 0], hidden[:, 1 + self.n_storage:], hidden[:, 1:1 + self.n_storage]


def load_transformers_features(directory: str | Path) -> TransformersFeatures:
    """The Hugging Face folder loaded as its users load it (``DINOv3ViTModel.from_pretrained``, SDPA attention,
    eval mode), with this package's (class, patch, storage) outputs."""
    transformers = require("transformers", "Loading the Hugging Face export with transformers")
    hf_model = transformers.DINOv3ViTModel.from_pretrained(str(directory), attn_implementation="sdpa").eval()
    return TransformersFeatures(hf_model, hf_model.config.num_register_tokens)


def verify_hf(model: nn.Module, directory: str | Path, *, size: tuple[int, int] = (256, 256),
              atol: float = 1e-4) -> VerificationReport:
    """Loads the folder with transformers' own ``DINOv3ViTModel`` and compares it with ``model`` at three sizes."""
    vit = _require_vit(model)
    return verify_export(vit, load_transformers_features(directory),
                         verification_sizes(size, vit.patch_size), what=f"Hugging Face folder {directory}",
                         label="transformers DINOv3ViTModel", storage_tokens=True, atol=atol)
