"""YaRN end to end, checked where it matters: past the native context.

glm4-tiny given a 512-token native context, converted with --rope-scaling yarn:4 to every target, must compute
what transformers computes with YaRN on an 1,800-token text — per position band — and the same artifact without
YaRN must not (otherwise the test could pass with the scaling doing nothing). The reference config is written
here by hand, as GLM-4-0414's card says to, not by glmkit.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from glmkit.convert import GlmkitError
from glmkit.runtimes import load, logits
from glmkit.runtimes.logits import log_softmax
from glmkit.runtimes.tokenizer import from_hf
from glmkit.sources import embedded

NATIVE, FACTOR, N = 512, 4, 1800
BANDS = [(0, NATIVE), (NATIVE, 2 * NATIVE), (2 * NATIVE, N)]


def _view(src, dest, **config):
    dest.mkdir()
    for f in src.iterdir():
        if f.name not in ("config.json", "glmkit.json"):
            os.symlink(f.resolve(), dest / f.name)
    cfg = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**cfg, **config}))
    return dest


@pytest.fixture(scope="module")
def models(tmp_path_factory, glmkit_cache):
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.hf import to_hf
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("yarn")
    short = _view(embedded.glm4_tiny_path(), root / "tiny-512", max_position_embeddings=NATIVE)
    card = _view(embedded.glm4_tiny_path(), root / "tiny-512-yarn", max_position_embeddings=NATIVE,
                 rope_scaling={"rope_type": "yarn", "factor": float(FACTOR),
                               "original_max_position_embeddings": NATIVE})
    out = {"source": short, "reference": card}
    for spec, tag in (("yarn:4", "yarn"), (None, "plain")):
        out[f"gguf-{tag}"] = to_gguf(str(short), root / f"{tag}.gguf", outtype="f32", verify=False, quiet=True,
                                     rope_scaling=spec)
        out[f"ov-{tag}"] = to_openvino(str(short), root / f"ov-{tag}", weight_format="fp16", verify=False,
                                       quiet=True, rope_scaling=spec)
        out[f"hf-{tag}"] = to_hf(str(short), root / f"hf-{tag}", quiet=True, rope_scaling=spec)
    return out


@pytest.fixture(scope="module")
def ids():
    tok = from_hf(embedded.glm4_tiny_path())
    return tok.encode("[gMASK]<sop>" + embedded.held_out_text()[:12000])[:N]


@pytest.fixture(scope="module")
def reference(models, ids):
    """transformers itself, on the card's config."""
    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(str(models["reference"]), dtype=torch.float32)
    with torch.no_grad():
        return log_softmax(net(torch.tensor([ids])).logits[0].numpy())


def _bands(ref: np.ndarray, got: np.ndarray) -> list[tuple[float, float]]:
    """(top-1 agreement, mean KL(reference || artifact)) per position band."""
    got = log_softmax(got)
    kl = (np.exp(ref) * (ref - got)).sum(-1)
    top1 = ref.argmax(-1) == got.argmax(-1)
    return [(float(top1[a:b].mean()), float(kl[a:b].mean())) for a, b in BANDS]


@pytest.mark.parametrize("kind", ["gguf", "ov", "hf"])
def test_yarn_artifacts_match_transformers_with_yarn_past_the_native_context(models, ids, reference, kind):
    scaled = _bands(reference, logits(models[f"{kind}-yarn"], ids))
    plain = _bands(reference, logits(models[f"{kind}-plain"], ids))
    for top1, kl in scaled:
        assert top1 >= 0.99 and kl < 1e-3, scaled
    # without YaRN the same weights compute something else beyond the native length
    for _, kl in plain[1:]:
        assert kl > 20 * max(k for _, k in scaled) and kl > 1e-2, (plain, scaled)


@pytest.mark.parametrize("kind", ["gguf", "ov", "hf"])
def test_the_runtime_context_is_native_times_factor_and_recorded(models, kind):
    for tag, want in (("yarn", NATIVE * FACTOR), ("plain", NATIVE)):
        path = models[f"{kind}-{tag}"]
        with load(str(path)) as rt:
            assert rt.context_length == want
        sidecar = path.with_name(path.name + ".glmkit.json") if kind == "gguf" else path / "glmkit.json"
        record = json.loads(sidecar.read_text())
        assert record["context_length"] == want
        assert (record["rope_scaling"] or {}).get("factor") == (FACTOR if tag == "yarn" else None)


def test_a_prompt_past_a_plain_artifacts_context_is_one_clear_error(models, ids):
    with load(str(models["gguf-plain"])) as rt:
        with pytest.raises(GlmkitError, match=f"context holds {NATIVE}"):
            rt.generate(ids[:N - 100])
    with load(str(models["gguf-yarn"])) as rt:
        assert rt.generate(ids[:N - 100]).prompt_tokens == N - 100


def test_rope_scaling_is_refused_clearly(models, tmp_path):
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.hf import to_hf

    with pytest.raises(GlmkitError, match="yarn:FACTOR"):
        to_gguf(str(models["source"]), tmp_path / "x.gguf", rope_scaling="yarn:0.5", quiet=True)
    with pytest.raises(GlmkitError, match="already has rope_scaling"):
        to_hf(str(models["reference"]), tmp_path / "y", rope_scaling="yarn:2", quiet=True)
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y").exists()
