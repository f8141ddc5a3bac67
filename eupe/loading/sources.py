"""Turn a ``weights`` argument into a local file: a path, ``file://``, ``http(s)://`` or ``hf://`` reference.

Downloads go to a cache folder (``$EUPE_CACHE`` or ``~/.cache/eupe``) through a temporary file and a rename, so an
interrupted download never leaves a file that looks complete. A cached file is used without any network access.
Any of these may end in ``#<key>`` to pick one state dict of a checkpoint that holds several (:func:`split_key`).
``hf://`` references go online only when the Hub answers a quick connection probe (:func:`hub_reachable`);
without a network they use the local Hugging Face cache at once instead of retrying for half a minute.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..utils.cache import cache_dir
from ..utils.io import atomic_path
from ..utils.optional import MissingDependencyError, install_hint

HUB_PROBE_TIMEOUT_S = 1.5  # how long hub_reachable waits for a connection to the Hub
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def split_key(spec: str) -> tuple[str, str | None]:
    """``"ckpt.pt#student"`` -> ``("ckpt.pt", "student")``: what follows the last ``#`` names the state dict to
    load from a checkpoint that holds several (``None`` when there is none, or when ``spec`` is an existing file
    whose name holds a ``#``)."""
    base, sep, key = spec.rpartition("#")
    if not sep or not key or Path(spec).exists():
        return spec, None
    return base, key


def resolve_weights(weights: str | os.PathLike, default_filename: str | None = None) -> Path:
    """Returns the local path of ``weights`` (without a ``#<key>`` suffix: see :func:`split_key`), downloading it
    first when it is remote and not yet cached."""
    spec = os.fspath(weights)
    if spec.startswith("hf://"):
        return _resolve_hf(spec, default_filename)
    parsed = urlparse(spec)
    if parsed.scheme in ("http", "https"):
        return _download(spec)
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(spec).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"Weights {path} is a folder, not a file; pass the checkpoint file inside it.")
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
        raise MissingDependencyError(f"hf:// weights need huggingface_hub: {install_hint('huggingface_hub')}") \
            from None
    kwargs = dict(repo_id=repo_id, filename=filename, revision=revision or None)
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        reason = f"{_hub_endpoint()[0]} cannot be reached: no network?"
    else:
        try:
            return Path(hf_hub_download(**kwargs))
        except Exception as err:  # gated repo, server error, ...: fall back to a cached copy
            reason = f"{type(err).__name__}: {err}"
    try:
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except Exception:
        raise FileNotFoundError(
            f"Could not fetch {filename} from the Hugging Face repo {repo_id} ({reason}) and no cached copy exists. "
            "Download it elsewhere and pass its local path (--weights PATH on the command line, weights=PATH in "
            "Python), or use --weights random for an untrained model."
        ) from None


def _hub_endpoint() -> tuple[str, int]:
    """(host, port) of the Hugging Face endpoint (``$HF_ENDPOINT``, default https://huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds (name lookup
    included, which has no timeout of its own: the probe runs in a daemon thread). Behind a proxy the Hub client
    decides, so this answers ``True``."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    reached = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection(_hub_endpoint(), timeout=timeout).close()
            reached.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="eupe-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return reached.is_set()


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
