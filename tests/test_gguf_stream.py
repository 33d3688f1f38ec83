"""Quantized GGUF without a full-precision stage: the same bytes as llama.cpp's own quantizer run on an f16 file,
disk that does not grow with depth, and the source run block by block as transformers runs it whole."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import depth_checkpoint

from glmkit.convert import calibration, gguf_types
from glmkit.convert import imatrix as im
from glmkit.convert.gguf import to_gguf
from glmkit.sources.embedded import glm4_tiny_path


def _tensors(path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    return {t.name: (t.tensor_type.name, bytes(np.asarray(t.data).tobytes())) for t in r.tensors}, r


@pytest.fixture(scope="module")
def staged(tmp_path_factory, glmkit_cache):
    """glm4-tiny in f16 and an importance matrix file, what llama-quantize is given in the staged way."""
    root = tmp_path_factory.mktemp("stream")
    f16 = to_gguf("glm4-tiny", root / "f16.gguf", outtype="f16", verify=False, quiet=True)
    chunks = calibration.token_chunks(glm4_tiny_path(), "embedded", 2)
    imatrix = im.save(im.compute(f16, chunks), root / "tiny.imatrix.gguf")
    return {"root": root, "f16": f16, "imatrix": imatrix}


@pytest.mark.parametrize("outtype,with_imatrix", [("q4_k_m", False), ("q6_k", False), ("q8_0", False),
                                                  ("iq4_xs", True), ("q2_k", True), ("iq2_xs", True)])
def test_streamed_quantization_equals_llama_quantize(staged, outtype, with_imatrix):
    """Reference: llama.cpp's llama_model_quantize on the f16 file (its per-tensor types and its quantizer);
    candidate: glmkit's streamed path from the safetensors source. Every tensor's type and bytes must match."""
    root, kw = staged["root"], {}
    if with_imatrix:
        kw["imatrix"] = im.load(staged["imatrix"]).weights()
    ref = root / f"ref-{outtype}.gguf"
    gguf_types.quantize(staged["f16"], ref, outtype, **kw)
    got = to_gguf("glm4-tiny", root / f"got-{outtype}.gguf", outtype=outtype, verify=False, quiet=True,
                  imatrix=str(staged["imatrix"]) if with_imatrix else None)
    (want, rw), (have, rh) = _tensors(ref), _tensors(got)
    assert sorted(want) == sorted(have)  # the order of the data is each writer's own
    differ = [n for n in want if want[n] != have[n]]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[0]}: {want[differ[0]][0]} vs {have[differ[0]][0]}"
    assert len({t for t, _ in want.values()}) > 1  # llama.cpp mixed types: the choice was really taken over
    for key in ("general.file_type", "general.quantization_version", "tokenizer.ggml.pre", "glm4.block_count"):
        assert rw.fields[key].contents() == rh.fields[key].contents(), key


def test_tensor_overrides_apply_in_the_stream(staged):
    ref = staged["root"] / "ref-override.gguf"
    override = gguf_types.Override.parse("attn_v=q8_0")
    gguf_types.quantize(staged["f16"], ref, "q4_k_m", overrides=[override])
    got = to_gguf("glm4-tiny", staged["root"] / "got-override.gguf", outtype="q4_k_m", verify=False, quiet=True,
                  tensor_types=("attn_v=q8_0",))
    want, _ = _tensors(ref)
    have, _ = _tensors(got)
    assert want == have and have["blk.0.attn_v.weight"][0] == "Q8_0"


class _DiskWatch:
    """Peak bytes allocated under a folder, sampled at every file event Python sees (open, remove, rename,
    truncate) — deterministic, and before a removal, so a staged file is counted while it exists."""

    EVENTS = {"open", "os.remove", "os.rename", "os.truncate", "shutil.rmtree", "os.replace"}

    def __init__(self, root: Path):
        self.root, self.peak, self.on = str(root), 0, False
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if not self.on or event not in self.EVENTS:
            return
        self.on = False  # walking the folder opens nothing we watch, but stay out of our own way
        try:
            total = 0
            for d, _, files in os.walk(self.root):
                for f in files:
                    try:
                        total += os.lstat(os.path.join(d, f)).st_blocks * 512
                    except FileNotFoundError:
                        pass
            self.peak = max(self.peak, total)
        finally:
            self.on = True


def test_gguf_disk_does_not_grow_with_depth(tmp_path, monkeypatch, glmkit_cache):
    """q4_k_m with an importance matrix from 2- and 8-block checkpoints of one width: the disk used beyond the
    output stays the same (the f16 stage of the staged way grew with every block)."""
    extra = {}
    for layers in (2, 8):
        src = depth_checkpoint(tmp_path, layers, monkeypatch)
        work = tmp_path / f"out{layers}"
        work.mkdir()
        watch = _DiskWatch(work)
        watch.on = True
        out = to_gguf(str(src), work / "m.gguf", outtype="q4_k_m", imatrix="embedded", calibration_chunks=2,
                      verify=False, quiet=True)
        watch.on = False
        size = out.stat().st_size
        extra[layers] = (watch.peak - size, size)
        assert watch.peak <= 1.5 * size, f"{layers} blocks: peak {watch.peak:,} bytes for a {size:,}-byte output"
    grown = extra[8][1] - extra[2][1]
    assert extra[8][0] - extra[2][0] < 0.05 * grown, extra


@pytest.mark.parametrize("spec", ["glm4-tiny", "synthetic:glm:tiny"])
def test_blockwise_logits_equal_transformers(spec, glmkit_cache):
    """The source run one block at a time gives the logits transformers' whole model gives."""
    from conftest import logits as whole

    from glmkit.convert import blockwise
    from glmkit.sources.source import transformers_dir

    path = transformers_dir(spec)
    chunks = [list(range(3, 40)), list(range(50, 70))]
    got = blockwise.run(path, chunks, logits=True)
    for c, g in zip(chunks, got):
        np.testing.assert_allclose(g, whole(str(path), c).numpy(), atol=2e-4, rtol=1e-4)


def test_a_source_generated_when_read_converts_and_verifies(tmp_path, monkeypatch, glmkit_cache):
    """The path GLM-4-32B takes (synthetic:glm4:glm-4-32b), at a small shape: weights generated when read, an
    importance matrix and the quantization streamed from them, and verification against the source block by
    block (there are no files for transformers to load). The tensors equal those of the same checkpoint written
    to disk."""
    import json

    from glmkit.sources import synthetic

    shape = "lazy-small"
    monkeypatch.setitem(synthetic.SHAPES, shape, dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4,
                                                      num_key_value_heads=2, head_dim=64, intermediate_size=512,
                                                      vocab_size=None))
    monkeypatch.setitem(synthetic.DTYPES, shape, "bfloat16")
    monkeypatch.setattr(synthetic, "LAZY_SHAPES", (shape,))
    out = to_gguf(f"synthetic:glm4:{shape}", tmp_path / "lazy.gguf", outtype="q4_k_m", imatrix="embedded",
                  calibration_chunks=2, quiet=True)
    v = json.loads(out.with_name(out.name + ".glmkit.json").read_text())["verification"]
    assert v["reference"] == "transformers fp32, block by block" and v["tokens"] > 100
    assert v["top1_agreement"] > 0.5 and v["mean_kl"] < 0.1  # random weights: reported, not gated

    from glmkit.sources.checkpoint import LazyCheckpoint, open_checkpoint

    lazy = open_checkpoint(synthetic.path(f"synthetic:glm4:{shape}"))
    assert isinstance(lazy, LazyCheckpoint) and lazy.weight_files == []
    written = tmp_path / "written"
    written.mkdir()
    from glmkit.sources import shards

    w = shards.ShardWriter(written)
    for name, t in lazy.tensors():
        w.add(name, t)
    w.close()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (written / f).write_bytes((lazy.path / f).read_bytes())
    again = to_gguf(str(written), tmp_path / "files.gguf", outtype="q4_k_m", imatrix="embedded",
                    calibration_chunks=2, verify=False, quiet=True)
    assert _tensors(out)[0] == _tensors(again)[0]
