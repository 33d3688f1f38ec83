"""A GGUF made of another GGUF's tensors with some taken from a third: `--max-size`'s probes.

llama.cpp quantizes each tensor on its own (its type from the file type, the layer and any override; its bytes
from the weights and the importance matrix alone), so the tensors a quantization with `--tensor-type attn_q=q6_k`
would write are the base file's, except attn_q's, which are a q6_k file's. Splicing them costs one file copy where
quantizing again costs minutes at the 9B shape; tests/test_quantize.py checks the two are byte for byte equal.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

_GENERATED = ("GGUF.", "general.architecture", "general.alignment")  # written by GGUFWriter itself


def splice(base: Path, donor: Path, patterns: list[str], out: Path) -> int:
    """Write `out`: `base` with every tensor whose name one of the regexes `patterns` matches taken from `donor`
    (same names and shapes); metadata is base's. Returns the bytes written."""
    import gguf

    reader, giver = gguf.GGUFReader(base), gguf.GGUFReader(donor)
    taken = {t.name: t for t in giver.tensors if any(re.search(p, t.name) for p in patterns)}
    tensors = [taken.get(t.name, t) for t in reader.tensors]
    for mine, theirs in zip(reader.tensors, tensors):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise GlmkitError(f"{donor.name}: {mine.name} has shape {tuple(theirs.shape)}, not {tuple(mine.shape)}")
    arch = reader.fields["general.architecture"].contents()
    alignment = reader.fields.get("general.alignment")
    w = gguf.GGUFWriter(out, arch)
    if alignment is not None:
        w.data_alignment = int(alignment.contents())
    for f in reader.fields.values():
        if f.name.startswith(_GENERATED):
            continue
        array = f.types[0] == gguf.GGUFValueType.ARRAY
        w.add_key_value(f.name, f.contents(), f.types[0], f.types[-1] if array else None)
    for t in tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in tensors:
        w.write_tensor_data(np.asarray(t.data))
    w.close()
    return out.stat().st_size
