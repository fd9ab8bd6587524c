"""Loading pretrained models by id without hanging on an unreachable Hugging Face hub.

Offline, ``from_pretrained("org/model")`` retries the hub five times with back-off (about 30 s)
before failing with a message that names neither the model nor a remedy. Every model loader asks
:func:`pretrained_options` first, which decides at once:

* a local folder: load it (no hub involved);
* ``HF_HUB_OFFLINE=1`` or the hub unreachable (one quick probe per process): load from the local
  cache (``local_files_only=True``) when the model is there, otherwise raise :class:`ConfigError`
  naming the model and how to make it available;
* otherwise: a normal (downloading) load.
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sas3d.errors import ConfigError

PROBE_TIMEOUT_S = 5.0
# files one of which a cached model snapshot holds (transformers models, diffusers pipelines)
_MARKER_FILES = ("config.json", "model_index.json", "preprocessor_config.json", "tokenizer_config.json")


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or "\\" in model_id


def is_cached(model_id: str) -> bool:
    """Whether the local Hugging Face cache holds a snapshot of ``model_id``."""
    from huggingface_hub import try_to_load_from_cache

    for name in _MARKER_FILES:
        try:
            hit = try_to_load_from_cache(model_id, name)
        except Exception:  # an id the hub would reject: not cached
            return False
        if isinstance(hit, str):
            return True
    return False


@functools.lru_cache(maxsize=None)
def hub_unreachable(endpoint: str) -> str | None:
    """None when ``endpoint`` answers (any status below 500), else why not. Probed once per process."""
    request = urllib.request.Request(endpoint.rstrip("/") + "/api/models?limit=1", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"it answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason


def _advice(model_id: str) -> str:
    return (
        f"Download it once on a machine with network (`hf download {model_id}`, or in Python "
        f"`huggingface_hub.snapshot_download('{model_id}')`) into the Hugging Face cache (HF_HOME), then run "
        "with HF_HUB_OFFLINE=1; or pass the path of a local folder holding the model (save_pretrained) instead of its id."
    )


def pretrained_options(model_id: str, what: str = "model") -> dict[str, Any]:
    """Extra ``from_pretrained`` keyword arguments for ``model_id``; raises ConfigError at once if it cannot load."""
    from huggingface_hub import constants

    if not model_id:
        raise ConfigError(f"{what}: no model id or local path given")
    if Path(model_id).expanduser().is_dir():
        return {}
    if _looks_like_path(model_id):
        raise ConfigError(f"{what} {model_id!r}: no such local folder (a hub id looks like 'org/name')")
    cache = constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        if is_cached(model_id):
            return {"local_files_only": True}
        raise ConfigError(f"cannot load {what} {model_id!r}: HF_HUB_OFFLINE is set and it is not in the local "
                          f"Hugging Face cache ({cache}). {_advice(model_id)}")
    why = hub_unreachable(constants.ENDPOINT)
    if why is None:
        return {}
    if is_cached(model_id):
        return {"local_files_only": True}
    raise ConfigError(f"cannot load {what} {model_id!r}: the Hugging Face hub ({constants.ENDPOINT}) cannot be "
                      f"reached ({why}) and the model is not in the local cache ({cache}). {_advice(model_id)}")
