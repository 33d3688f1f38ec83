"""Artifact kinds as plug-ins: each kind claims its own artifact and declares what it can do, and load(), logits,
encode and glm-bench ask the kind — so a kind glmkit does not ship is one class and its registration."""

import ast
from pathlib import Path

import numpy as np
import pytest
from conftest import TEXT
from conftest import logits as transformers_logits

from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes import kinds, load
from glmkit.runtimes.capabilities import Capabilities
from glmkit.runtimes.encode import artifact_token_ids
from glmkit.runtimes.glm4v import FILES
from glmkit.runtimes.kinds import ArtifactKind, kind_of
from glmkit.runtimes.kinds.transformers import TransformersSource
from glmkit.runtimes.logits import logits

ROOT = Path(__file__).resolve().parents[1]


def _glm4v_layout(tmp_path) -> Path:
    """A directory with a GLM-4V IR's three file names (claiming reads names, not weights)."""
    d = tmp_path / "v"
    d.mkdir()
    for f in FILES:
        (d / f).write_text("<net/>")
    return d


def test_each_artifact_is_claimed_by_its_own_kind(tiny_artifacts, tmp_path):
    glm4v = _glm4v_layout(tmp_path)
    named = {k: kind_of(p).name for k, p in tiny_artifacts.items()}
    assert named == {"llamacpp": "gguf", "openvino": "openvino", "transformers": "transformers"}
    assert kind_of(glm4v).name == kind_of(glm4v, "openvino").name == "openvino-glm4v"
    # what each can do is the artifact's, not its engine's: GLM-4V runs on OpenVINO but alone and with images
    v, text = kind_of(glm4v).capabilities, kind_of(tiny_artifacts["openvino"]).capabilities
    assert v.images and not v.batching and text.batching and not text.images
    assert not any(kind_of(p).capabilities.images for p in tiny_artifacts.values())
    with pytest.raises(GlmkitError, match="parallel is not available for a GLM-4V model"):
        load(str(glm4v), parallel=2)
    with pytest.raises(GlmkitError, match="no openvino_model.xml"):
        load(tiny_artifacts["llamacpp"], backend="openvino")
    (tmp_path / "bad.gguf").write_bytes(b"NOPE")
    with pytest.raises(GlmkitError, match="no GGUF magic"):
        logits(tmp_path / "bad.gguf", [1, 2])


class Pinned(ArtifactKind):
    """A kind glmkit does not ship: a directory whose pin.txt names a checkpoint, run by the reference."""

    name, backend, label = "pinned", "transformers", "a pinned checkpoint"
    capabilities = Capabilities(penalties=True, options=("n_ctx",))

    def claims(self, path):
        return (path / "pin.txt").is_file()

    def _target(self, model):
        return (Path(model) / "pin.txt").read_text().strip()

    def open(self, model, device="CPU", **options):
        return TransformersSource().open(self._target(model), device, **options)

    def logits(self, model, ids, kv_cache=None, pixels=None):
        return TransformersSource().logits(self._target(model), ids, kv_cache, pixels)

    def token_ids(self, model, texts):
        return TransformersSource().token_ids(self._target(model), texts)

    def weight_bytes(self, model, runtime=None):
        return TransformersSource().weight_bytes(self._target(model), runtime)


def test_a_new_kind_is_one_class_and_its_registration(tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    from glmkit.benchmarks.roofline import weight_bytes_per_token
    from glmkit.sources.source import transformers_dir

    monkeypatch.setattr(kinds, "KINDS", kinds.KINDS)  # the registration is undone after the test
    monkeypatch.setattr(kinds, "BACKENDS", kinds.BACKENDS)
    kinds.register(Pinned())
    pin = tmp_path / "pinned"
    pin.mkdir()
    (pin / "pin.txt").write_text("glm4-tiny")
    source = transformers_dir("glm4-tiny")

    ids = Tokenizer.from_file(str(source / "tokenizer.json")).encode(TEXT, add_special_tokens=False).ids
    assert artifact_token_ids(pin, [TEXT]) == [ids]  # tokenizers itself is the reference
    np.testing.assert_allclose(logits(pin, ids[:24]), transformers_logits(str(source), ids[:24]).numpy(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(GlmkitError, match="dtype is not available for a pinned checkpoint"):
        load(str(pin), dtype="float32")  # its own capabilities decide, not its backend's
    with load(str(pin), n_ctx=256) as rt:
        assert rt.kind.name == "pinned" and rt.context_length == 256
        held = sum(p.numel() * p.element_size() for p in rt.model.parameters())
        embed = rt.model.get_input_embeddings().weight
        assert weight_bytes_per_token(pin, runtime=rt) == held - embed.numel() * embed.element_size()


def test_no_module_dispatches_on_a_backend_or_format_name():
    """What an artifact can do is asked of its kind: outside runtimes/kinds/ no code compares a runtime's
    backend, or a chat format's name, with a literal."""
    offenders = []
    for folder in ("runtimes", "serve", "benchmarks", "convert", "glm4"):
        for f in (ROOT / folder).rglob("*.py"):
            if "kinds" in f.parts:
                continue
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Compare):
                    continue
                sides = [node.left, *node.comparators]
                names = [ast.unparse(s) for s in sides if isinstance(s, ast.Attribute)]
                literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
                if literal and any(n.endswith(".backend") or n.endswith("chat_format.name") for n in names):
                    offenders.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
