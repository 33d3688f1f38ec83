"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, nothing at the output."""

import json
import shutil

import pytest
from conftest import glm_convert


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _expect_refusal(r, out, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glm-convert: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture
def ckpt(synthetic, tmp_path):
    return _copy(synthetic("glm4"), tmp_path / "ckpt")


def test_nonexistent_path(tmp_path):
    out = tmp_path / "out"
    _expect_refusal(glm_convert(tmp_path / "nope", "-o", out), out, "no such file or directory")


def test_missing_config(ckpt, tmp_path):
    (ckpt / "config.json").unlink()
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "no config.json")


def test_corrupt_config(ckpt, tmp_path):
    (ckpt / "config.json").write_text("{not json")
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "not valid JSON")


def test_missing_tokenizer(ckpt, tmp_path):
    (ckpt / "tokenizer.json").unlink()
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "no tokenizer")


def test_unsupported_architecture(ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "LlamaForCausalLM", "Glm4ForCausalLM", "ChatGLMModel")


def test_truncated_safetensors(ckpt, tmp_path):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "truncated or corrupt")


def test_corrupt_safetensors_header(ckpt, tmp_path):
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:16] = b"garbage!"
    f.write_bytes(bytes(data))
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "corrupt safetensors header")


def test_missing_tensor_is_caught_before_writing(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(ckpt / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "missing: model.layers.1.mlp.down_proj.weight")


def test_pickle_weights_refused_unless_allowed(ckpt, tmp_path):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(ckpt / "model.safetensors"), ckpt / "pytorch_model.bin")
    (ckpt / "model.safetensors").unlink()
    out = tmp_path / "out"
    _expect_refusal(glm_convert(ckpt, "-o", out), out, "pickle", "--allow-pickle")
    r = glm_convert(ckpt, "-o", out, "--allow-pickle", "-q")
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))


def test_existing_output_refused_unless_forced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = glm_convert("synthetic:glm4:tiny", "-o", out)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr
    assert (out / "keep.txt").read_text() == "mine"
    r = glm_convert("synthetic:glm4:tiny", "-o", out, "--force", "-q")
    assert r.returncode == 0, r.stderr
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_hub_id_without_network_fails_in_one_line(tmp_path):
    out = tmp_path / "out"
    r = glm_convert("THUDM/GLM-4-9B-0414", "-o", out, env={"HF_HUB_OFFLINE": "1"})
    _expect_refusal(r, out, "THUDM/GLM-4-9B-0414", "HF_HUB_OFFLINE")


def test_bad_synthetic_spec(tmp_path):
    out = tmp_path / "out"
    _expect_refusal(glm_convert("synthetic:llama:tiny", "-o", out), out, "synthetic:<family>:<shape>")


def test_failure_midway_leaves_nothing(synthetic, tmp_path, monkeypatch):
    """An exception after tensors were written removes the temporary; OUT never appears."""
    from glmkit.convert import hf
    from glmkit.sources import remap

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(remap, "write_tokenizer", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        hf.to_hf("synthetic:glm4:tiny", out, quiet=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,words", [
    (("--vision-format", "w8a8"), ("--vision-format", "text model")),
    (("--vision-calibration", "."), ("--vision-format w8a8",)),
    (("--vision-format", "w8a8", "--vision-calibration", "no-pictures-here"), ("no folder of pictures",)),
])
def test_vision_options_are_refused_where_they_cannot_apply(synthetic, tmp_path, args, words):
    """The tower's options need a GLM-4V source, w8a8, and a folder holding pictures."""
    out = tmp_path / "out"
    _expect_refusal(glm_convert(synthetic("glm4"), "--to", "openvino", "-o", out, *args, cwd=tmp_path), out, *words)
