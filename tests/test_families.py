import json

import pytest

from glmkit.convert import GlmkitError, detect, detect_dir
from glmkit.glm4 import families


@pytest.mark.parametrize("family,arch", [("glm4", "Glm4ForCausalLM"), ("glm", "GlmForCausalLM"),
                                         ("chatglm", "ChatGLMModel")])
def test_detects_each_format_from_its_checkpoint(synthetic, family, arch):
    path = synthetic(family)
    assert json.loads((path / "config.json").read_text())["architectures"] == [arch]
    assert detect_dir(path).name == family


def test_detects_chatglm_conditional_generation_and_model_type_only():
    assert detect({"architectures": ["ChatGLMForConditionalGeneration"]}).name == "chatglm"
    assert detect({"model_type": "glm4"}).name == "glm4"


def test_unknown_architecture_lists_what_is_supported():
    with pytest.raises(GlmkitError) as e:
        detect({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    msg = str(e.value)
    assert "LlamaForCausalLM" in msg and "Glm4ForCausalLM" in msg and "ChatGLMModel" in msg and "\n" not in msg


def test_real_special_token_ids_match_glm4():
    ids = families.REAL_SPECIAL_IDS
    assert (ids["<|endoftext|>"], ids["[gMASK]"], ids["<sop>"], ids["<|user|>"], ids["<|observation|>"]) == \
        (151329, 151331, 151333, 151336, 151338)


def test_context_and_yarn_guidance():
    glm4 = families.FAMILIES["glm4"]
    assert glm4.context_length({"max_position_embeddings": 32768}) == 32768
    assert "131072" in glm4.yarn_guidance({"max_position_embeddings": 32768})
    assert families.FAMILIES["chatglm"].context_length({"seq_length": 1048576}) == 1048576


def _render(template, messages):
    from jinja2 import Environment

    env = Environment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders chat templates
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def test_glm4_chat_format():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    assert _render(families.GLM4_CHAT_TEMPLATE, msgs) == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>\nHello!<|user|>\n2+2?<|assistant|>")


def test_glm4_template_lays_out_tools_as_glm_4_0414_does():
    """Same text as the GLM-4-9B-0414 template real checkpoints ship, for tools and plain turns (that template writes
    a space after a history call's name, where glmkit's matches what the model generates: `name\\n{json}`)."""
    from pathlib import Path

    real = (Path(__file__).parent / "data" / "templates" / "GLM-4-9B-0414.chat_template.jinja").read_text("utf-8")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "add", "description": "a + b"}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Weather?"}]
    from glmkit.glm4 import template

    for t in (tools, None):
        assert template.render(families.GLM4_CHAT_TEMPLATE, msgs, t) == template.render(real, msgs, t)
    call = [{"role": "user", "content": "x"}, {"role": "assistant", "metadata": "add", "content": "{}"},
            {"role": "observation", "content": "3"}]
    assert template.render(families.GLM4_CHAT_TEMPLATE, call, tools).endswith(
        "<|user|>\nx<|assistant|>add\n{}<|observation|>\n3<|assistant|>")


def test_z1_forces_think_and_strips_it_from_history():
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>\nplan</think>\nHello!"},
            {"role": "user", "content": "Again"}]
    out = _render(families.Z1_CHAT_TEMPLATE, msgs)
    assert out == "[gMASK]<sop><|user|>\nHi<|assistant|>\nHello!<|user|>\nAgain<|assistant|>\n<think>\n"
    assert families.chat_format(template=families.Z1_CHAT_TEMPLATE).thinks
    assert families.chat_format(name_or_path="THUDM/GLM-Z1-9B-0414").sampling["temperature"] == 0.6
    assert not families.chat_format(name_or_path="THUDM/GLM-4-9B-0414").thinks
