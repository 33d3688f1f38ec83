"""Data-aware int4 one decoder block at a time: NNCF's GPTQ and scale estimation without the whole fp32 model.

NNCF calibrates by running the exported fp32 IR on the calibration text, so the whole model in fp32 must stay
resident (GLM-4-9B's shape: 37.6 GB). Here the source runs block by block (blockwise.py); each block is converted
alone to OpenVINO and compressed by NNCF itself, with the block's real inputs. Its outputs, through the compressed
block, are the next block's inputs — as NNCF's own layer-wise GPTQ feeds later layers from the quantized earlier
ones. Each block's weights, scales and zero points are saved to the stage (memory-mapped later), then put into
the IR optimum-intel exported and NNCF compressed data-free with the same scheme, whose constants have the same
names, types and shapes. Peak memory: one fp32 block, its OpenVINO copy and the calibration activations.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np

from glmkit.common import progress
from glmkit.glm4.errors import GlmkitError

XML = "openvino_model.xml"
# A compressed weight's constants: self.model.layers.3.mlp.down_proj._openvino_orig_weight/scale in the exported IR
# (optimum-intel's patched modules), self.layer.mlp.down_proj.weight/scale in a block model; both named by
# (block, "mlp.down_proj/scale").
_DECODER = re.compile(r"\.layers\.(\d+)\.(.+)\.(?:_openvino_orig_)?weight(/scale|/zero_point)?$")
_BLOCK = re.compile(r"^self\.layer\.(.+)\.weight(/scale|/zero_point)?$")


def supports(settings: dict) -> bool:
    """Block-by-block calibration covers GPTQ and scale estimation with every block in int4 (ratio 1.0). AWQ
    inserts scaling nodes, and a ratio below 1 ranks layers across the whole model: both stay whole-model."""
    return (settings["weight_format"] == "int4" and settings["ratio"] == 1.0 and not settings["awq"]
            and bool(settings["gptq"] or settings["scale_estimation"]))


def data_free_settings(settings: dict) -> dict:
    """The export's own compression: the same scheme, no calibration (the blocks' constants replace its own)."""
    return {**settings, "gptq": False, "scale_estimation": False, "awq": False, "dataset": None,
            "num_samples": None}


def calibration_chunks(source_dir: Path, settings: dict) -> list[list[int]]:
    """The samples optimum-intel calibrates on: each calibration text tokenized alone, special tokens added."""
    from glmkit.sources.tokenizer import load_hf_tokenizer

    from .calibration import texts

    tok = load_hf_tokenizer(source_dir)
    return [tok(t)["input_ids"] for t in texts(settings["dataset"], settings["num_samples"])]


def _block_module(layer):
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, h, cos, sin):
            out = self.layer(h, attention_mask=None, position_embeddings=(cos, sin), use_cache=False)
            return out[0] if isinstance(out, tuple) else out

    return Block()


def _input_dims(layer) -> set[int]:
    import torch

    return {m.in_features for m in layer.modules() if isinstance(m, torch.nn.Linear)}


@contextlib.contextmanager
def _nncf_silenced():
    """NNCF logs through a handler bound to the real stdout at import, so redirecting the streams is not enough."""
    import logging

    from nncf.common.logging import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        nncf_logger.setLevel(level)


def _nncf_mode(settings: dict):
    import nncf

    return nncf.CompressWeightsMode.INT4_SYM if settings["sym"] else nncf.CompressWeightsMode.INT4_ASYM


def _compress_block(layer, hidden: list, rope, settings: dict):
    """The block converted to OpenVINO and compressed by NNCF on its inputs: (compiled block, its constants)."""
    import nncf
    import openvino as ov

    inputs = [[h[None].numpy(), *(t.numpy() for t in rope(h))] for h in hidden]
    model = ov.convert_model(_block_module(layer), example_input=tuple(inputs[0]))
    kw = dict(mode=_nncf_mode(settings), group_size=settings["group_size"], ratio=1.0, all_layers=True,
              dataset=nncf.Dataset(inputs), subset_size=len(inputs), gptq=bool(settings["gptq"]),
              scale_estimation=bool(settings["scale_estimation"]))
    if settings["group_size"] != -1 and any(d % settings["group_size"] for d in _input_dims(layer)):
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

        # as the export does (openvino.group_size_warnings): the largest group size that divides the layer
        kw["advanced_parameters"] = AdvancedCompressionParameters(
            group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST)
    with _nncf_silenced():  # its tables and bars, once a block, say nothing to a user
        model = nncf.compress_weights(model, **kw)
    constants = {}
    for op in model.get_ops():
        m = _BLOCK.match(op.get_friendly_name())
        if op.get_type_name() == "Constant" and m:
            constants[m.group(1) + (m.group(2) or "")] = op
    return ov.Core().compile_model(model, "CPU"), inputs, constants


def calibrate(source_dir: Path, settings: dict, stage: Path, quiet: bool = False) -> Path:
    """Compress every decoder block of the source on the calibration text; each block's constants are saved under
    `stage/blocks/<i>/` (raw bytes, with their types and shapes in constants.json). Returns that folder."""
    import torch

    from . import blockwise

    chunks = calibration_chunks(source_dir, settings)
    out = stage / "blocks"
    layers = json.loads((source_dir / "config.json").read_text())["num_hidden_layers"]

    def on_block(i: int, layer, hidden: list, rope) -> list:
        compiled, inputs, constants = _compress_block(layer, hidden, rope, settings)
        folder = out / str(i)
        folder.mkdir(parents=True, exist_ok=True)
        index = {}
        for k, (name, op) in enumerate(sorted(constants.items())):
            np.ascontiguousarray(op.get_data()).tofile(folder / f"{k}.bin")
            index[name] = {"file": f"{k}.bin", "type": op.get_element_type().get_type_name(),
                           "dtype": str(op.get_data().dtype),
                           "shape": list(op.get_output_shape(0))}
        (folder / "constants.json").write_text(json.dumps(index))
        return [torch.from_numpy(compiled(x)[0][0].copy()) for x in inputs]

    methods = " + ".join(m for m, on in (("GPTQ", settings["gptq"]), ("scale estimation",
                                                                     settings["scale_estimation"])) if on)
    progress.say(f"calibrating int4 one block at a time on {len(chunks)} samples ({methods}, NNCF)", quiet)
    with progress.task("calibrating blocks", layers, quiet) as advance:
        blockwise.run(source_dir, chunks, on_block=on_block, progress=advance)
    return out


def apply(ir_dir: Path, blocks: Path) -> int:
    """Put the calibrated blocks' constants into the IR in `ir_dir` (compressed data-free with the same scheme);
    returns how many were replaced. Every saved constant must find its twin: anything else is an error."""
    import openvino as ov

    model = ov.Core().read_model(ir_dir / XML)
    saved = {int(d.name): json.loads((d / "constants.json").read_text()) for d in blocks.iterdir() if d.is_dir()}
    keep, replaced = [], 0
    for op in model.get_ops():
        m = _DECODER.search(op.get_friendly_name())
        if op.get_type_name() != "Constant" or not m or int(m.group(1)) not in saved:
            continue
        entry = saved[int(m.group(1))].pop(m.group(2) + (m.group(3) or ""), None)
        if entry is None:
            continue
        kind, shape = op.get_element_type(), list(op.get_output_shape(0))
        if entry["type"] != kind.get_type_name() or entry["shape"] != shape:
            raise GlmkitError(f"{op.get_friendly_name()}: the IR holds {kind.get_type_name()} {shape}, the "
                              f"calibrated block {entry['type']} {entry['shape']}; the two compressions differ")
        # mapped copy-on-write: the pages stay the file's, so the IR's constants never sit in memory together
        raw = np.memmap(blocks / m.group(1) / entry["file"], dtype=entry["dtype"], mode="c")
        const = ov.op.Constant(ov.Tensor(raw, shape, kind)) if kind.bitwidth < 8 else \
            ov.op.Constant(raw.reshape(shape), shared_memory=True)
        const.set_friendly_name(op.get_friendly_name())
        for target in op.output(0).get_target_inputs():
            target.replace_source_output(const.output(0))
        keep.append(raw)
        replaced += 1
    left = {i: list(v) for i, v in saved.items() if v}
    if left:
        i, names = next(iter(left.items()))
        raise GlmkitError(f"block {i}'s calibrated {names[0]} has no twin in the exported IR")
    staged = ir_dir / "blockwise"
    ov.save_model(model, staged / XML, compress_to_fp16=False)
    del model, keep
    for f in (XML, Path(XML).with_suffix(".bin").name):
        (staged / f).replace(ir_dir / f)
    staged.rmdir()
    return replaced
