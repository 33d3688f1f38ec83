"""Where a model comes from: a local directory, an embedded name, or a Hugging Face id.

Every glmkit entry point takes the same SRC and turns it into a validated local Checkpoint here.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from glmkit.common.paths import cache_root
from glmkit.glm4.errors import GlmkitError

from . import checkpoint, embedded, lazy, synthetic

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a conversion needs from a hub repo; pickles only when the user allows them.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt", "*.md"]


@dataclass
class Source:
    spec: str                 # what the user typed
    kind: str                 # local | embedded | synthetic | hub
    path: Path                # local directory holding the checkpoint
    revision: str | None = None

    def describe(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "path": str(self.path), "revision": self.revision}


def resolve(spec: str, revision: str | None = None, allow_pickle: bool = False, quiet: bool = False) -> Source:
    """Turn SRC into a local directory, materialising embedded models and downloading hub ids as needed."""
    spec = str(spec)
    if spec in embedded.NAMES:
        return Source(spec, "embedded", embedded.path(spec))
    if spec.startswith("synthetic:"):
        return Source(spec, "synthetic", synthetic.path(spec, quiet=quiet))
    path = Path(spec).expanduser()
    if path.exists() or not HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        return Source(spec, "local", path)
    return _from_hub(spec, revision, allow_pickle)


def open_source(spec: str, revision: str | None = None, allow_pickle: bool = False,
                quiet: bool = False) -> tuple[Source, checkpoint.Checkpoint]:
    src = resolve(spec, revision=revision, allow_pickle=allow_pickle, quiet=quiet)
    return src, checkpoint.open_checkpoint(src.path, allow_pickle=allow_pickle)


def transformers_dir(spec: str, quiet: bool = True) -> Path:
    """A directory transformers loads as it is, for any SRC: the source itself, or for the chatglm format its
    native remap (remap.py), made once into glmkit's cache."""
    from glmkit.common.atomic import atomic_output

    from . import remap

    ckpt = checkpoint.open_checkpoint(resolve(spec, quiet=quiet).path)
    lazy.refuse_files(ckpt, "transformers")
    if ckpt.family.native:
        return ckpt.path
    key = hashlib.sha256(str(ckpt.path.resolve()).encode()).hexdigest()[:16]
    out = cache_root() / "hf" / key
    if not (out / "config.json").is_file():
        with atomic_output(out, force=True) as tmp:
            remap.write_checkpoint(ckpt, tmp, quiet=True)
    return out


def _from_hub(repo_id: str, revision: str | None, allow_pickle: bool) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = HUB_PATTERNS + (["*.bin"] if allow_pickle else [])
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except GatedRepoError:
        raise GlmkitError(f"{repo_id} is gated on the Hugging Face Hub; accept its licence there and run "
                          "`hf auth login`") from None
    except RepositoryNotFoundError:
        raise GlmkitError(f"{repo_id}: no such model on the Hugging Face Hub (or it is private); check the id or "
                          "log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise GlmkitError(f"{repo_id}: revision {revision!r} not found; check --revision") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else \
            "the Hugging Face Hub cannot be reached and it is not in the local cache"
        raise GlmkitError(f"{repo_id}: {why}; download it where there is network (`hf download {repo_id}`) "
                          "and pass its directory") from None
    except OSError as e:  # connection errors not wrapped by huggingface_hub
        raise GlmkitError(f"{repo_id}: download failed ({type(e).__name__}); check the network or pass a local "
                          "directory") from None
    return Source(repo_id, "hub", Path(path), revision)
