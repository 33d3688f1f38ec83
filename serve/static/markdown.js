// Markdown for model answers, built as DOM nodes with textContent: no HTML from the model is ever parsed, so an
// answer holding <script> or <img onerror=…> is shown as those characters. Covers what chat answers use: fenced
// code (also while its fence is still open mid-stream), headings, lists, paragraphs, `code`, **bold**, *italic*
// and http(s) links.
(function () {
  "use strict";

  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*|_[^_\n]+_)|(\[[^\]\n]+\]\([^)\s]+\))/;

  function inline(parent, text) {
    while (text) {
      const m = INLINE.exec(text);
      if (!m) { parent.append(document.createTextNode(text)); return; }
      if (m.index) parent.append(document.createTextNode(text.slice(0, m.index)));
      const t = m[0];
      if (m[1]) parent.append(el("code", t.slice(1, -1)));
      else if (m[2]) { const b = el("strong"); inline(b, t.slice(2, -2)); parent.append(b); }
      else if (m[3]) { const i = el("em"); inline(i, t.slice(1, -1)); parent.append(i); }
      else {
        const label = t.slice(1, t.indexOf("]("));
        const href = t.slice(t.indexOf("](") + 2, -1);
        if (/^https?:\/\//i.test(href)) {
          const a = el("a", label);
          a.href = href; a.rel = "noopener noreferrer"; a.target = "_blank";
          parent.append(a);
        } else parent.append(document.createTextNode(t));
      }
      text = text.slice(m.index + t.length);
    }
  }

  function render(text) {
    const out = document.createDocumentFragment();
    const lines = text.split("\n");
    let para = [], list = null;
    const flushPara = () => {
      if (para.length) { const p = el("p"); p.style.whiteSpace = "pre-wrap"; inline(p, para.join("\n")); out.append(p); }
      para = [];
    };
    const flushList = () => { list = null; };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = /^\s*```\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        flushPara(); flushList();
        const body = [];
        for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) body.push(lines[i]);
        const pre = el("pre"), code = el("code", body.join("\n"));
        if (fence[1]) code.dataset.lang = fence[1];
        pre.append(code); out.append(pre);
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
      if (heading) {
        flushPara(); flushList();
        const h = el("h" + Math.min(6, heading[1].length + 2)); inline(h, heading[2]); out.append(h);
      } else if (item) {
        flushPara();
        const kind = /\d/.test(item[1]) ? "ol" : "ul";
        if (!list || list.tagName.toLowerCase() !== kind) { list = el(kind); out.append(list); }
        const li = el("li"); inline(li, item[2]); list.append(li);
      } else if (!line.trim()) {
        flushPara(); flushList();
      } else {
        flushList(); para.push(line);
      }
    }
    flushPara();
    return out;
  }

  window.glmMarkdown = { render };
})();
