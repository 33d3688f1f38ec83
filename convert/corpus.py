"""Text that is on every machine offline: the Python standard library's own sources.

glm4-tiny is trained on it and glmkit's big synthetic tokenizers are fitted to it. A fixed 1-in-25 slice of
files (by a hash of their path) is held out for evaluation.
"""

from __future__ import annotations

import sysconfig
import zlib
from pathlib import Path
from typing import Iterator

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo", "ensurepip"}
HELD_OUT_MODULUS = 25


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_held_out(path: Path) -> bool:
    root = Path(sysconfig.get_paths()["stdlib"])
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % HELD_OUT_MODULUS == 0


def stdlib_texts(held_out: bool = False, max_bytes: int | None = None) -> Iterator[str]:
    """Source files as text, in a fixed order; the training split by default, the held-out one on request."""
    total = 0
    for p in stdlib_files():
        if is_held_out(p) != held_out:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        total += len(text)
        yield text
        if max_bytes and total >= max_bytes:
            return
