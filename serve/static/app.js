// glm-serve's chat page: glm-serve's own /v1/chat/completions, streamed. History holds what the API takes back
// (a Z1 model's reasoning never re-enters it); the figures under each answer are measured here, in the browser.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = { model: null, history: [], controller: null, key: sessionStorage.getItem("glm-serve-key"),
                  images: false, image: null, imageSent: false };

  function showError(text) { $("error").textContent = text; $("error").hidden = !text; }

  async function health() {
    try {
      const h = await (await fetch("/health")).json();
      state.model = h.model;
      state.images = !!h.images;  // a GLM-4V model: images may be attached or pasted
      $("attach").hidden = !state.images;
      $("model").textContent = `${h.model} · ${h.backend}${h.device ? " · " + h.device : ""}`;
    } catch (e) { $("model").textContent = "server unreachable"; }
  }

  function bubble(role) {
    const box = document.createElement("div");
    box.className = `message ${role}`;
    const label = document.createElement("div");
    label.className = "role"; label.textContent = role;
    const body = document.createElement("div");
    body.className = "body";
    box.append(label, body);
    $("messages").append(box);
    return { box, body };
  }

  function answerBubble() {
    const { box, body } = bubble("assistant");
    const details = document.createElement("details");
    details.className = "reasoning"; details.hidden = true;
    const summary = document.createElement("summary");
    summary.textContent = "Reasoning";
    const thought = document.createElement("div");
    thought.className = "text";
    details.append(summary, thought);
    box.insertBefore(details, body);
    const stats = document.createElement("div");
    stats.className = "stats";
    box.append(stats);
    return { box, body, details, thought, stats };
  }

  function askKey() {
    return new Promise((resolve) => {
      const dialog = $("key-dialog");
      dialog.addEventListener("close", () => {
        state.key = $("key").value.trim();
        sessionStorage.setItem("glm-serve-key", state.key);
        resolve();
      }, { once: true });
      dialog.showModal();
    });
  }

  async function post(body, signal) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const headers = { "Content-Type": "application/json" };
      if (state.key) headers.Authorization = `Bearer ${state.key}`;
      const r = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal });
      if (r.status !== 401) return r;
      await askKey();
    }
    throw new Error("the API key was refused");
  }

  // GLM-4V reads one image per conversation; it goes with the next message as an OpenAI image_url part.
  function attach(file) {
    if (!state.images || !file || !file.type.startsWith("image/")) return;
    if (state.imageSent) { showError("GLM-4V reads one image per conversation: start a new chat for another"); return; }
    const reader = new FileReader();
    reader.onload = () => {
      state.image = reader.result;  // a data: URL
      $("attached").src = state.image; $("attachment").hidden = false;
    };
    reader.readAsDataURL(file);
  }

  function unattach() { state.image = null; $("attachment").hidden = true; $("attached").removeAttribute("src"); }

  async function send(text) {
    showError("");
    const view = bubble("user");
    if (state.image) {
      state.history.push({ role: "user", content: [{ type: "image_url", image_url: { url: state.image } },
                                                  { type: "text", text }] });
      const img = document.createElement("img");
      img.src = state.image; img.alt = "attached image";
      const words = document.createElement("div");
      words.textContent = text;
      view.body.append(img, words);
      state.imageSent = true;
      unattach();
    } else {
      state.history.push({ role: "user", content: text });
      view.body.textContent = text;
    }
    return answer();
  }

  async function answer() {
    const view = answerBubble();
    view.body.dataset.raw = "";
    const system = $("system").value.trim();
    const body = {
      model: state.model, stream: true, stream_options: { include_usage: true },
      messages: (system ? [{ role: "system", content: system }] : []).concat(state.history),
      temperature: parseFloat($("temperature").value), max_tokens: parseInt($("max-tokens").value, 10) || 512,
    };
    state.controller = new AbortController();
    setBusy(true);
    const t0 = performance.now();
    let first = null, last = null, raw = "", reasoning = "", usage = null, finish = null;
    try {
      const r = await post(body, state.controller.signal);
      if (!r.ok) {
        const e = await r.json().catch(() => ({}));
        throw new Error((e.error && e.error.message) || `HTTP ${r.status}`);
      }
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
          const data = JSON.parse(event.slice(6));
          if (data.error) throw new Error(data.error.message);
          if (data.usage) usage = data.usage;
          for (const choice of data.choices || []) {
            const d = choice.delta || {};
            if (d.reasoning_content) {
              reasoning += d.reasoning_content;
              view.details.hidden = false; view.thought.textContent = reasoning;
            }
            if (d.content) {
              raw += d.content;
              view.body.dataset.raw = raw;
              scheduleRender(view.body);
            }
            if (d.content || d.reasoning_content) { first = first || performance.now(); last = performance.now(); }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") showError(e.message);
    } finally {
      const stopped = state.controller.signal.aborted;
      state.controller = null;
      setBusy(false);
      state.history.push({ role: "assistant", content: raw });
      const tokens = usage ? usage.completion_tokens : null;
      const parts = [];
      if (first) parts.push(`TTFT ${Math.round(first - t0)} ms`);
      if (tokens > 1 && last > first) parts.push(`${((tokens - 1) / ((last - first) / 1000)).toFixed(1)} tokens/s`);
      if (tokens !== null) parts.push(`${tokens} tokens`);
      if (stopped) parts.push("stopped");
      else if (finish === "length") parts.push("cut at max tokens");
      view.stats.textContent = parts.join(" · ");
      view.box.dataset.done = stopped ? "stopped" : "finished";
    }
  }

  // Markdown is rendered at most once a frame: re-rendering on every token would cost O(n²) on long answers.
  function scheduleRender(body) {
    if (body.dataset.pending) return;
    body.dataset.pending = "1";
    requestAnimationFrame(() => {
      delete body.dataset.pending;
      body.replaceChildren(window.glmMarkdown.render(body.dataset.raw));
    });
  }

  function setBusy(busy) {
    $("send").hidden = busy; $("stop").hidden = !busy; $("prompt").disabled = busy;
    if (!busy) $("prompt").focus();
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt").value;
    if (!text.trim() || state.controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.history = []; $("messages").replaceChildren(); showError("");
    state.imageSent = false; unattach();
  });
  $("image-file").addEventListener("change", (e) => { attach(e.target.files[0]); e.target.value = ""; });
  $("unattach").addEventListener("click", unattach);
  $("prompt").addEventListener("paste", (e) => {
    const item = Array.from(e.clipboardData ? e.clipboardData.items : []).find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); attach(item.getAsFile()); }
  });
  $("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
  health();
})();
