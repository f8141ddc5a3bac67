"""On-disk layout of extracted features, its crash-safe shard writer and its reader.

A feature folder holds ``manifest.json`` (settings, and ``complete`` once finished), ``shards/NNNNN/`` (one
folder per block of ``shard_size`` images: ``features.safetensors`` or one ``<key>.npy`` per key, plus
``meta.json`` with the dataset indices it holds and the files it skipped), and, once complete, ``index.csv``
(``row,path,label,class_name`` per feature row) and ``skipped.csv`` (``path,reason``). A shard folder is
written under a temporary name and renamed when complete, so it either exists whole or not at all.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..utils.io import atomic_folder

MANIFEST = "manifest.json"
INDEX = "index.csv"
SKIPPED = "skipped.csv"
SHARDS = "shards"
FORMATS = ("safetensors", "npy")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class FeatureStoreError(RuntimeError):
    """A feature folder that is missing, incomplete or does not match what was asked for."""


def read_manifest(root: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a feature folder; a corrupt one is a :class:`FeatureStoreError`."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise FeatureStoreError(f"{path} is not valid JSON ({err}); delete the folder, or extract again with "
                                "--overwrite") from None
    if not isinstance(manifest, dict):
        raise FeatureStoreError(f"{path} does not hold a feature manifest; extract again with --overwrite")
    return manifest


def require_finite(values: torch.Tensor, what: str, rows: Sequence[str] | None = None, *, hint: str = "") -> None:
    """Raises ``ValueError`` naming the rows (first dimension: by ``rows``, e.g. image paths, else by index) of
    ``values`` that hold NaN or infinite values; ``what`` says what they are and ``hint`` what to do."""
    if values.numel() == 0 or not values.is_floating_point():
        return
    finite = torch.isfinite(values.reshape(values.shape[0] if values.ndim else 1, -1)).all(1)
    bad = (~finite).nonzero().flatten().tolist()
    if not bad:
        return
    named = [str(rows[i]) if rows is not None else f"row {i}" for i in bad[:5]]
    raise ValueError(f"{what}: {len(bad)} of {finite.numel()} rows hold NaN or infinite values: {', '.join(named)}"
                     + (" ..." if len(bad) > 5 else "") + (f"; {hint}" if hint else ""))


def shard_dir(root: Path, shard: int) -> Path:
    return root / SHARDS / f"{shard:05d}"


def write_shard(
    root: Path,
    shard: int,
    features: Mapping[str, torch.Tensor],
    indices: Sequence[int],
    failures: Sequence[tuple[int, str]],
    fmt: str,
) -> Path:
    """Writes one shard folder atomically (:func:`~eupe.utils.io.atomic_folder`: a temporary folder, then a
    rename); a killed write leaves a temporary folder that the next run's ``remove_stale_temporaries`` deletes."""
    final = shard_dir(root, shard)
    with atomic_folder(final) as tmp:
        tensors = {k: v.contiguous() for k, v in features.items()}
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(tensors, str(tmp / "features.safetensors"))
        else:
            for key, value in tensors.items():
                np.save(tmp / f"{key}.npy", value.numpy())
        meta = {"indices": [int(i) for i in indices], "failures": [[int(i), str(r)] for i, r in failures]}
        (tmp / "meta.json").write_text(json.dumps(meta))
    return final


def read_shard_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / "meta.json").read_text())


def read_shard_tensor(path: Path, key: str) -> torch.Tensor:
    st = path / "features.safetensors"
    if st.exists():
        from safetensors import safe_open

        with safe_open(str(st), framework="pt") as f:
            return f.get_tensor(key)
    return torch.from_numpy(np.load(path / f"{key}.npy"))


class FeatureSet(NamedTuple):
    """Features of one key with their labels (``-1`` where unlabelled), image paths and class names."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    class_names: list[str]


class FeatureStore:
    """Reader of a complete feature folder written by :func:`eupe.extract.extract_features`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise FeatureStoreError(f"{self.root} is not a feature folder (no {MANIFEST}); run `eupe extract` first")
        self.manifest: dict[str, Any] = read_manifest(self.root)
        if not self.manifest.get("complete"):
            raise FeatureStoreError(f"Extraction into {self.root} did not finish; run the same `eupe extract` "
                                    "command again to complete it (finished shards are kept)")
        self.class_names: list[str] = list(self.manifest.get("class_names", []))
        self.keys: list[str] = list(self.manifest["keys"])
        with open(self.root / INDEX, newline="") as f:
            rows = list(csv.DictReader(f))
        self.paths = [r["path"] for r in rows]
        self.labels = torch.tensor([int(r["label"]) if r["label"] != "" else -1 for r in rows], dtype=torch.long)
        with open(self.root / SKIPPED, newline="") as f:
            self.skipped = [(r["path"], r["reason"]) for r in csv.DictReader(f)]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def identity(self) -> dict[str, Any]:
        """What backbone extracted these features (its identity, keyed by content), as the manifest records it;
        folders of manifest format 1 recorded only a name string (``{"model_id": ...}``)."""
        recorded = self.manifest["settings"].get("model")
        return dict(recorded) if isinstance(recorded, Mapping) else {"model_id": recorded}

    def shard_paths(self) -> list[Path]:
        return [shard_dir(self.root, i) for i in range(int(self.manifest["num_shards"]))]

    def iter_shards(self, key: str = "cls") -> Iterator[torch.Tensor]:
        """The features of ``key`` shard by shard, in row order (for folders too big to load at once)."""
        self._check_key(key)
        for path in self.shard_paths():
            yield read_shard_tensor(path, key)

    def load(self, key: str = "cls", dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """All rows of ``key`` as one tensor (converted to ``dtype`` unless it is ``None``)."""
        parts = [t if dtype is None else t.to(dtype) for t in self.iter_shards(key)]
        out = torch.cat(parts) if parts else torch.empty(0)
        if out.shape[0] != len(self):
            raise FeatureStoreError(f"{self.root}: {key!r} has {out.shape[0]} rows but {INDEX} lists {len(self)}")
        require_finite(out, f"{self.root}: features {key!r}", self.paths,
                       hint="extract them again (`eupe extract --overwrite`; --dtype float32 if float16 overflows)")
        return out

    def _check_key(self, key: str) -> None:
        if key not in self.keys:
            raise FeatureStoreError(f"{self.root} has no features {key!r}; it holds {', '.join(self.keys)}")


def load_features(root: str | Path, key: str = "cls") -> FeatureSet:
    """Features ``key`` of the feature folder ``root`` with their labels, paths and class names."""
    store = FeatureStore(root)
    return FeatureSet(store.load(key), store.labels, store.paths, store.class_names)
