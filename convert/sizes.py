"""Sizes as users write them: 2500000, 2.5MB, 2.4MiB, 4.5GB, 4.5G."""

from __future__ import annotations

import re

from glmkit.glm4.errors import GlmkitError

# decimal units as `ls -h --si` and file managers print them; binary ones when the user writes the i
UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
         "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str | int, option: str = "size") -> int:
    """Bytes in `text`; one clear line for anything else."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        m = _SIZE.fullmatch(str(text))
        if not m or m.group(2).upper() not in UNITS:
            raise GlmkitError(f"{option} {text}: give bytes or a size with a unit, e.g. 2500000, 2.5MB, 4.5GB")
        value, unit = float(m.group(1)), m.group(2).upper()
    n = int(value * UNITS[unit])
    if n <= 0:
        raise GlmkitError(f"{option} {text}: must be more than 0 bytes")
    return n


def human(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
