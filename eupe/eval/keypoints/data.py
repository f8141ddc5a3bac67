"""SPair-71k (release layout) pairs for training-free keypoint correspondence.

Layout: ``<root>/JPEGImages/<category>/<name>.jpg`` and ``<root>/PairAnnotation/<split>/*.json`` (split ``trn``,
``val`` or ``test``), each JSON holding ``src_imname``, ``trg_imname``, ``category``, ``src_kps``/``trg_kps``
(matching lists of ``[x, y]`` pixels in original image coordinates) and ``src_bndbox``/``trg_bndbox``
(``[x1, y1, x2, y2]``). ``ImageAnnotation/<category>/`` holds per-image annotations, not needed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("trn", "val", "test")


class KeypointDataError(ValueError):
    """A SPair annotation that is malformed."""


@dataclass(frozen=True)
class KeypointPair:
    category: str
    source: Path
    target: Path
    source_kps: np.ndarray  # [K, 2] (x, y)
    target_kps: np.ndarray  # [K, 2]
    target_bbox: np.ndarray  # [4] x1, y1, x2, y2
    annotation: Path


def _points(data: dict, key: str, path: Path) -> np.ndarray:
    try:
        points = np.asarray(data[key], dtype=np.float64).reshape(-1, 2)
    except KeyError:
        raise KeypointDataError(f"pair annotation {path} has no {key!r} field") from None
    except ValueError:
        raise KeypointDataError(f"pair annotation {path}: {key!r} is not a list of [x, y] points") from None
    return points


def _require_inside(points: np.ndarray, image: Path, what: str) -> None:
    """Refuses keypoints outside the image (a wrong annotation would be matched at the clamped border)."""
    with Image.open(image) as picture:
        width, height = picture.size
    outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    if outside.any():
        raise KeypointDataError(f"{what}: {int(outside.sum())} point(s) outside the {width}x{height} image "
                                f"{image.name} (first: {points[outside][0].tolist()})")


def read_pair(path: str | Path, root: str | Path) -> KeypointPair:
    """Parses one pair annotation; its images must exist under ``<root>/JPEGImages/<category>/``."""
    path, root = Path(path), Path(root)
    try:
        data = json.loads(path.read_text())
        category, src_name, trg_name = data["category"], data["src_imname"], data["trg_imname"]
    except json.JSONDecodeError as err:
        raise KeypointDataError(f"pair annotation {path} is not valid JSON ({err})") from None
    except KeyError as err:
        raise KeypointDataError(f"pair annotation {path} has no {err.args[0]!r} field") from None
    src_kps, trg_kps = _points(data, "src_kps", path), _points(data, "trg_kps", path)
    if len(src_kps) != len(trg_kps):
        raise KeypointDataError(f"pair annotation {path}: {len(src_kps)} source but {len(trg_kps)} target keypoints")
    bbox = np.asarray(data.get("trg_bndbox", ()), dtype=np.float64)
    if bbox.shape != (4,) or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise KeypointDataError(f"pair annotation {path}: trg_bndbox must be [x1, y1, x2, y2], got {bbox.tolist()}")
    images = root / "JPEGImages" / category
    source, target = images / src_name, images / trg_name
    for image, points, key in ((source, src_kps, "src_kps"), (target, trg_kps, "trg_kps")):
        if not image.is_file():
            raise FileNotFoundError(f"pair annotation {path} references {image}, which does not exist")
        _require_inside(points, image, f"pair annotation {path}: {key}")
    return KeypointPair(category, source, target, src_kps, trg_kps, bbox, path)


def list_pairs(root: str | Path, split: str = "test", pairs_per_category: int | None = 100,
               categories: list[str] | None = None) -> list[KeypointPair]:
    """The first ``pairs_per_category`` pairs (file-name order) of each category of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown SPair split {split!r}; use one of {SPLITS}")
    folder = Path(root) / "PairAnnotation" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"SPair split folder {folder} does not exist; the dataset root must hold "
                                f"PairAnnotation/{split}/ and JPEGImages/ (the SPair-71k release layout)")
    per_category: dict[str, list[KeypointPair]] = {}

    def wanted(category: str) -> bool:
        full = pairs_per_category is not None and len(per_category.get(category, ())) >= pairs_per_category
        return not full and (categories is None or category in categories)

    for path in sorted(folder.glob("*.json")):
        hint = path.stem.rpartition(":")[2]  # SPair file names end in ":<category>"; skip unwanted ones unread
        if hint and hint != path.stem and not wanted(hint):
            continue
        pair = read_pair(path, root)
        if wanted(pair.category):
            per_category.setdefault(pair.category, []).append(pair)
    if not per_category:
        raise KeypointDataError(f"no pair annotations found in {folder}"
                                + (f" for categories {categories}" if categories else ""))
    return [pair for category in sorted(per_category) for pair in per_category[category]]
