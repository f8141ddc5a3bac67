"""Turn a ``weights`` argument into a local file: a path, ``file://``, ``http(s)://`` or ``hf://`` reference.

Downloads go to a cache folder (``$EUPE_CACHE`` or ``~/.cache/eupe``) through a temporary file and a rename, so an
interrupted download never leaves a file that looks complete. A cached file is used without any network access.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..utils.io import atomic_path


def cache_dir() -> Path:
    return Path(os.environ.get("EUPE_CACHE", Path.home() / ".cache" / "eupe"))


def resolve_weights(weights: str | os.PathLike, default_filename: str | None = None) -> Path:
    """Returns the local path of ``weights``, downloading it first when it is remote and not yet cached."""
    spec = os.fspath(weights)
    if spec.startswith("hf://"):
        return _resolve_hf(spec, default_filename)
    parsed = urlparse(spec)
    if parsed.scheme in ("http", "https"):
        return _download(spec)
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file {path} does not exist. Pass a local .pt/.pth/.safetensors file, a file:// or https:// URL, "
            f"or an hf://org/repo[/file] reference."
        )
    return path


def _resolve_hf(spec: str, default_filename: str | None) -> Path:
    """``hf://org/repo[/path/in/repo][@revision]`` through huggingface_hub (its cache; offline when cached)."""
    ref, _, revision = spec[len("hf://") :].partition("@")
    parts = ref.strip("/").split("/")
    if len(parts) < 2:
        raise ValueError(f"Bad Hugging Face reference {spec!r}; expected hf://org/repo[/filename][@revision]")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or default_filename
    if not filename:
        raise ValueError(f"{spec!r} names no file and the model has no default; use hf://{repo_id}/<file>")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError("hf:// weights need huggingface_hub: pip install 'eupe[hf]'") from None
    kwargs = dict(repo_id=repo_id, filename=filename, revision=revision or None)
    try:
        return Path(hf_hub_download(**kwargs))
    except Exception as online_error:  # no network, gated repo, ...: fall back to a cached copy
        try:
            return Path(hf_hub_download(**kwargs, local_files_only=True))
        except Exception:
            raise FileNotFoundError(
                f"Could not fetch {filename} from the Hugging Face repo {repo_id} and no cached copy exists "
                f"({type(online_error).__name__}: {online_error}). Download it elsewhere and pass its local path."
            ) from online_error


def _download(url: str) -> Path:
    name = Path(urlparse(url).path).name or "weights.pt"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    target = cache_dir() / "checkpoints" / f"{digest}-{name}"
    if target.is_file():
        return target
    import torch.hub

    try:
        with atomic_path(target) as tmp:
            torch.hub.download_url_to_file(url, str(tmp), progress=True)
    except Exception as err:
        raise FileNotFoundError(
            f"Could not download {url} ({type(err).__name__}: {err}). Download it by hand and pass the local path."
        ) from err
    return target
