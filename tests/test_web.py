"""glm-serve's chat page in a real browser: headless Chromium (Debian's chromium and chromium-driver, installed by
.ci/run) driven by Selenium against glm-serve on glm4-tiny. What the page shows is checked against the API itself."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from openai import OpenAI
from servers import serving

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install, as .ci/run does)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def models(tmp_path_factory, glmkit_cache):
    from glmkit.convert.gguf import to_gguf

    root = tmp_path_factory.mktemp("web")
    return {"tiny": str(to_gguf("glm4-tiny", root / "tiny.gguf", outtype="f32", verify=False, quiet=True)),
            "z1": str(to_gguf("glm4-tiny-z1", root / "z1.gguf", outtype="f32", verify=False, quiet=True))}


def _wait(browser, condition, seconds: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.05).until(lambda d: condition(d))


def _open(browser, base: str, max_tokens: int = 48):
    from selenium.webdriver.common.by import By

    browser.get(base + "/")
    _wait(browser, lambda d: "tiny" in d.find_element(By.ID, "model").text)
    box = browser.find_element(By.ID, "max-tokens")
    box.clear()
    box.send_keys(str(max_tokens))


def _say(browser, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    prompt = browser.find_element(By.ID, "prompt")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        prompt.send_keys(line)
        if i < len(lines) - 1:
            prompt.send_keys(Keys.SHIFT, Keys.ENTER)  # a new line, not a send
    prompt.send_keys(Keys.ENTER)


def _answers(browser) -> list:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, ".message.assistant")


def _finished(browser, n: int):
    return _wait(browser, lambda d: len(_answers(d)) >= n and _answers(d)[n - 1].get_attribute("data-done"))


def _api(base: str, messages: list[dict], max_tokens: int = 48):
    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0)


def test_streamed_answers_equal_the_api_and_the_second_turn_uses_the_history(browser, models):
    from selenium.webdriver.common.by import By

    with serving(models["tiny"], "--n-ctx", "2048") as base:
        _open(browser, base)
        assert "llamacpp" in browser.find_element(By.ID, "model").text
        first, second = "def read_config(path):", "class Stack:"
        _say(browser, first)
        _finished(browser, 1)
        api = _api(base, [{"role": "user", "content": first}])
        want1 = api.choices[0].message.content
        got1 = _answers(browser)[0].find_element(By.CLASS_NAME, "body").get_attribute("data-raw")
        assert got1 == want1
        stats = _answers(browser)[0].find_element(By.CLASS_NAME, "stats").text
        assert "TTFT" in stats and "tokens/s" in stats and f"{api.usage.completion_tokens} tokens" in stats
        _say(browser, second)
        _finished(browser, 2)
        history = [{"role": "user", "content": first}, {"role": "assistant", "content": want1},
                   {"role": "user", "content": second}]
        want2 = _api(base, history).choices[0].message.content
        assert _answers(browser)[1].find_element(By.CLASS_NAME, "body").get_attribute("data-raw") == want2
        assert want2 != _api(base, history[2:]).choices[0].message.content  # the history changed the answer


def test_stop_cancels_the_generation_on_the_server(browser, models):
    """glm4-tiny's greedy answer to this prompt runs on for its whole budget — on the PyTorch reference, tens of
    seconds, so no machine is fast enough to finish first; Stop comes as soon as text shows, and the server
    reports the generation cancelled, not finished."""
    from selenium.webdriver.common.by import By

    with serving("glm4-tiny", "--n-ctx", "2048") as base:
        _open(browser, base, max_tokens=1900)
        _say(browser, "import sys\nimport sys")
        _wait(browser, lambda d: _answers(d) and len(_answers(d)[0].find_element(By.CLASS_NAME, "body").text) > 20)
        browser.find_element(By.ID, "stop").click()
        assert _finished(browser, 1) == "stopped"
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{base}/health").json())["generating"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (health["generations_cancelled"], health["generations_finished"]) == (1, 0)
        assert "stopped" in _answers(browser)[0].find_element(By.CLASS_NAME, "stats").text


def test_z1_reasoning_is_shown_collapsed_apart_from_the_answer(browser, models):
    from selenium.webdriver.common.by import By

    with serving(models["z1"], "--n-ctx", "2048") as base:
        _open(browser, base, max_tokens=160)
        _say(browser, "def read_config(path):")
        _finished(browser, 1)
        want = _api(base, [{"role": "user", "content": "def read_config(path):"}], 160).choices[0].message
        answer = _answers(browser)[0]
        details = answer.find_element(By.CSS_SELECTOR, "details.reasoning")
        assert details.get_attribute("open") is None and details.is_displayed()
        thought = details.find_element(By.CLASS_NAME, "text").get_attribute("textContent")
        assert thought == want.reasoning_content and thought
        assert answer.find_element(By.CLASS_NAME, "body").get_attribute("data-raw") == want.content


def test_html_is_shown_as_text_never_run(browser, models):
    """The user's message and a model answer holding markup: shown as the characters, no element made, no script
    run (the answer goes through the page's own renderer, as streamed answers do)."""
    from selenium.webdriver.common.by import By

    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    with serving(models["tiny"], "--n-ctx", "2048") as base:
        _open(browser, base, max_tokens=4)
        _say(browser, evil)
        _finished(browser, 1)
        user = browser.find_element(By.CSS_SELECTOR, ".message.user .body")
        assert user.text == evil and not user.find_elements(By.CSS_SELECTOR, "img, script, b")
        shown = browser.execute_script("""
            const box = document.createElement('div');
            box.append(window.glmMarkdown.render(arguments[0] + '\\n\\n```html\\n' + arguments[0] + '\\n```'));
            document.body.append(box);
            return [box.querySelectorAll('img, script, b').length, box.textContent, window.pwned || 0];
        """, evil)
        assert shown == [0, evil + evil, 0]
        assert browser.execute_script("return window.pwned || 0") == 0


def test_an_image_attached_or_pasted_goes_with_the_message(browser, models, tmp_path):
    """GLM-4V (glm4v-tiny, int8 IR): the page attaches an image from a file (and takes a pasted one), shows it
    in the user's bubble, and the answer is the API's for the same image_url message; a second image is refused
    in the page; a text model's page offers no attachment."""
    import base64

    from PIL import Image, ImageDraw
    from selenium.webdriver.common.by import By

    from glmkit.convert.openvino import to_openvino

    ir = to_openvino("glm4v-tiny", tmp_path / "v", weight_format="int8", verify=False, quiet=True)
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 10, 90, 80), fill="red")
    path = tmp_path / "circle.png"
    image.save(path)
    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    with serving(str(ir)) as base:
        _open(browser, base, max_tokens=8)
        assert browser.find_element(By.ID, "attach").is_displayed()
        browser.find_element(By.ID, "image-file").send_keys(str(path))
        _wait(browser, lambda d: d.find_element(By.ID, "attachment").is_displayed())
        _say(browser, "What colour is the shape?")
        _finished(browser, 1)
        shown = browser.find_element(By.CSS_SELECTOR, ".message.user img")
        assert shown.get_attribute("src") == url
        assert browser.execute_script("return arguments[0].naturalWidth", shown) == 160  # shown, not blocked
        msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "What colour is the shape?"}]}]
        want = _api(base, msgs, max_tokens=8).choices[0].message.content
        assert _answers(browser)[0].find_element(By.CLASS_NAME, "body").get_attribute("data-raw") == want
        _paste(browser, url)
        _wait(browser, lambda d: "one image per conversation" in d.find_element(By.ID, "error").text)
        browser.find_element(By.ID, "new-chat").click()
        _paste(browser, url)
        _wait(browser, lambda d: d.find_element(By.ID, "attached").get_attribute("src") == url)
    with serving(models["tiny"]) as base:
        _open(browser, base)
        assert not browser.find_element(By.ID, "attach").is_displayed()


def _paste(browser, url: str) -> None:
    """An image pasted into the message box, as the clipboard delivers one."""
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0].split(",")[1]), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
        document.getElementById("prompt").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt }));
        """, url)
