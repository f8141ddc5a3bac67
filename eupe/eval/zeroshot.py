"""Zero-shot classification as the paper does it (§9.2): the class token goes through an adapter head into a
teacher's space and is compared (cosine: both sides L2-normalised) with class embeddings from that teacher's
text tower; softmax over classes, top-1/top-5.

The adapter head is the checkpoint's ``projectors.<teacher>.cls`` head (``model.projectors``) or one from
a head file in the same key layout (as distillation writes it). Class embeddings are a ``[C, D]`` array in a
``.npy`` or ``.safetensors`` file, one row per class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..extract import ExtractConfig, is_feature_folder, one_split, open_features, require_finite
from ..extract.provenance import require_same_weights
from ..loading import read_state_dict
from ..models import Projectors
from .backbone import EvalBackbone
from .classification import align_labels, evaluate_predictions, rank_scores
from .results import write_run_outputs
from .settings import check_settings

logger = logging.getLogger(__name__)


def load_class_embeddings(path: str | Path) -> Tensor:
    """The ``[C, D]`` class-embedding matrix of a ``.npy`` file or a ``.safetensors`` file with one 2-D tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Class embeddings file {path} does not exist")
    if path.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"Class embeddings file {path} must be .npy or .safetensors")
    try:
        if path.suffix == ".npy":
            tensors = {"embeddings": torch.from_numpy(np.load(path, allow_pickle=False))}
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(path))
    except Exception as err:  # numpy and safetensors raise their own kinds for a corrupt or pickled file
        raise ValueError(f"Cannot read class embeddings {path} ({type(err).__name__}: {err}); it must hold a "
                         "numeric [num_classes, dim] array (numpy.save or safetensors; pickled objects are refused)"
                         ) from None
    if path.suffix == ".npy":
        array = tensors["embeddings"]
    else:
        matrices = {k: v for k, v in tensors.items() if v.ndim == 2}
        if len(matrices) != 1:
            raise ValueError(f"{path} must hold exactly one 2-D tensor (the class embeddings), found "
                             f"{sorted(matrices) or 'none'}")
        array = next(iter(matrices.values()))
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"Class embeddings in {path} must be [num_classes, dim], got shape {tuple(array.shape)}")
    require_finite(array.float(), f"class embeddings in {path}", hint="recompute them")
    return array.float()


def read_class_names(path: str | Path) -> list[str]:
    """One class name per non-empty line; a name given twice is an error (classes are matched by name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Class names file {path} does not exist")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Class names file {path} names {', '.join(map(repr, repeated[:5]))} more than once; "
                         "classes are matched by name, so each must be unique")
    return names


def read_head_file(path: str | Path) -> Projectors:
    """Adapter heads from a file in the checkpoints' key layout (``projectors.<teacher>.*`` or ``<teacher>.*``)."""
    tensors = read_state_dict(path)
    prefix = "projectors." if any(k.startswith("projectors.") for k in tensors) else ""
    return Projectors.from_state_dict(tensors, prefix=prefix)


def select_class_head(projectors: Projectors, teacher: str | None, source: str) -> tuple[str, nn.Module]:
    """The ``cls`` adapter head of ``teacher`` (default: the first) among a model's or head file's projectors."""
    if not len(projectors):
        raise ValueError(f"{source} carries no adapter heads (projectors.*); pass a head file with --head")
    names = list(projectors.keys())
    name = teacher or names[0]
    if name not in projectors:
        raise ValueError(f"{source} has no adapter head for teacher {name!r}; it has {', '.join(names)}")
    return name, projectors[name]["cls"].eval()


def zero_shot_logits(class_tokens: Tensor, head: nn.Module, class_embeddings: Tensor) -> Tensor:
    """Cosine similarities ``[N, C]`` between projected class tokens and class embeddings (softmax-ready).

    Non-finite class tokens or head outputs are a ``ValueError`` naming the rows."""
    require_finite(class_tokens, "zero-shot class tokens")
    with torch.no_grad():
        projected = head(class_tokens.float())
    require_finite(projected, "the adapter head's outputs", hint="the head file or checkpoint holds bad weights")
    if projected.shape[1] != class_embeddings.shape[1]:
        raise ValueError(f"The adapter head maps into {projected.shape[1]}-d but the class embeddings are "
                         f"{class_embeddings.shape[1]}-d; use embeddings from the same teacher as the head")
    return F.normalize(projected, dim=1) @ F.normalize(class_embeddings.to(projected), dim=1).T


@dataclass
class ZeroShotRunConfig:
    """A full ``eupe eval zeroshot`` run."""

    data: str | None = None  # labelled images (class subfolders / list file) or a feature folder
    class_embeddings: str | None = None
    class_names: str | None = None  # one per line, same order as the embedding rows
    head: str | None = None  # head file with projectors.<teacher>.cls.* (default: the checkpoint's)
    teacher: str | None = None
    feature_key: str = "cls"
    model: str | None = None
    weights: str | None = None
    topk: list[int] = field(default_factory=lambda: [1, 5])
    extract: ExtractConfig = field(default_factory=ExtractConfig)


def run_zeroshot(backbone: EvalBackbone, config: ZeroShotRunConfig, output_dir: str | Path) -> dict[str, Any]:
    """Class tokens (read or extracted) -> adapter head -> cosine with class embeddings -> top-k results."""
    if not config.data or not config.class_embeddings:
        raise ValueError("zero-shot needs --data (labelled images or a feature folder) and --class-embeddings")
    check_settings("eval zeroshot", [("topk", config.topk, bool(config.topk) and min(config.topk) > 0,
                                      "must be positive numbers")])
    embeddings = load_class_embeddings(config.class_embeddings)
    data = one_split(config.data, "val", "--data")
    if config.head:
        teacher, head = select_class_head(read_head_file(config.head), config.teacher, config.head)
    else:
        teacher, head = select_class_head(backbone.load().projectors, config.teacher,
                                          f"checkpoint of {backbone.name or 'the backbone'}")
    store = open_features(data, cache_dir=Path(output_dir) / "features" / "val", backbone=backbone,
                          config=config.extract)
    if not config.head and is_feature_folder(data):  # the head comes from the backbone: the features must too
        require_same_weights(store.identity, backbone.identity(), f"The feature folder {data}",
                             "give the --model/--weights that extracted it, or the head with --head")
    names = read_class_names(config.class_names) if config.class_names else [str(i) for i in range(len(embeddings))]
    if len(names) != len(embeddings):
        raise ValueError(f"{config.class_names} names {len(names)} classes but {config.class_embeddings} has "
                         f"{len(embeddings)} rows")
    labels = _labels_for(store.labels, store.class_names, names, config)
    device = backbone.device
    logits = zero_shot_logits(store.load(config.feature_key).to(device), head.to(device), embeddings.to(device))
    res = evaluate_predictions(rank_scores(logits, max(config.topk)), labels.to(device), names, config.topk)
    results = {"teacher": teacher, "num_images": len(store), "num_classes": len(names), "backbone": store.identity,
               **res.summary()}
    summary = (f"zeroshot: {res.headline()} (teacher {teacher}, {len(store)} images, {len(names)} classes) "
               f"-> {output_dir}")
    write_run_outputs(output_dir, config=config, results=results, summary=summary, table=res.per_class)
    return results


def _labels_for(labels: Tensor, data_classes: Sequence[str], names: Sequence[str], config: ZeroShotRunConfig
                ) -> Tensor:
    """Dataset labels as embedding-row indices: by class name when names are given, else by class index."""
    if config.class_names:
        return align_labels(labels, data_classes, names, f"data {config.data}")
    if (labels < 0).any() or (len(labels) and int(labels.max()) >= len(names)):
        raise ValueError(f"Labels of {config.data} do not index the {len(names)} class-embedding rows; give "
                         "--class-names (one per row) to match classes by name")
    if list(data_classes) != list(names[: len(data_classes)]):
        logger.warning("zero-shot: the classes of %s (%s, ...) are matched to the class-embedding rows by their "
                       "sorted order (class %r -> row 0); give --class-names to match them by name", config.data,
                       ", ".join(data_classes[:3]), data_classes[0] if data_classes else None)
    return labels
