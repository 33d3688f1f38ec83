"""Will the disk hold what glmkit is about to write? Refused before anything is written, with the numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

GB = 2**30
SLACK = 256 * 2**20


def check_disk(needs: dict[Path, int], what: str) -> None:
    """`needs`: bytes to be written under each path (output directory, stage, cache). Paths on one filesystem are
    added up; any filesystem short of room is refused before anything is written."""
    per_fs: dict[int, tuple[Path, int]] = {}
    for path, n in needs.items():
        p = Path(path).absolute()
        while not p.exists():
            p = p.parent
        dev = p.stat().st_dev
        where, total = per_fs.get(dev, (p, 0))
        per_fs[dev] = (where, total + n)
    for where, n in per_fs.values():
        free = shutil.disk_usage(where).free
        if n + SLACK > free:
            raise GlmkitError(f"{what} needs about {n / GB:.1f} GB on the filesystem of {where} (intermediates and "
                              f"output) but {free / GB:.1f} GB is free; free space or write elsewhere with -o")
