// Model answers as Markdown, through two vendored libraries (static/vendor/README.md has their versions):
// `marked` parses, `DOMPurify` sanitizes what it produced. Raw HTML the model writes is shown as text, never
// parsed; links go only to http(s) and mailto and open in a new tab; images are not loaded (a model's answer
// must not make the browser fetch anything). Fenced code gets a bar with its language and a Copy button; an
// unclosed fence (mid-stream) renders as a code block so far, marked "open".
"use strict";

window.lucid = window.lucid || {};

(function (lucid) {
  const ALLOWED_TAGS = ["p", "br", "strong", "em", "del", "code", "pre", "a", "ul", "ol", "li", "blockquote", "hr",
    "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "div", "span", "button"];
  const ALLOWED_ATTR = ["href", "class", "start", "align", "type", "title", "aria-label"];

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  // Links only to http(s) and mailto: a javascript: URL from the model must never become clickable.
  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return ["http:", "https:", "mailto:"].includes(parsed.protocol) ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  const parser = new window.marked.Marked({ gfm: true, breaks: false });
  parser.use({
    // No HTML blocks or inline tags at all: the model's `<b>` or `<script>` stays text that Markdown runs through
    // (a tokenizer returning undefined matches nothing; `false` would fall back to marked's own).
    tokenizer: { html() { return undefined; }, tag() { return undefined; } },
    renderer: {
      html(token) { return escapeHtml(token.text); },                 // never reached; text if it ever is
      image(token) { return escapeHtml(token.text || ""); },          // alt text, nothing fetched
      heading(token) {                                                // h1 is the page's own title
        const level = Math.min(token.depth + 1, 6);
        return `<h${level}>${this.parser.parseInline(token.tokens)}</h${level}>\n`;
      },
      link(token) {
        const inner = this.parser.parseInline(token.tokens);
        const href = safeUrl(token.href);
        return href ? `<a href="${escapeHtml(href)}">${inner}</a>` : escapeHtml(token.raw);
      },
      code(token) {
        const lang = (token.lang || "").match(/^[\w+#.-]*/)[0];
        return `<div class="code-block"><div class="code-bar"><span class="code-lang">${escapeHtml(lang || "code")}` +
          '</span><button type="button" class="copy" aria-label="Copy code">Copy</button></div>' +
          `<pre><code${lang ? ` class="language-${escapeHtml(lang)}"` : ""}>${escapeHtml(token.text)}` +
          "</code></pre></div>\n";
      },
    },
  });

  const purify = window.DOMPurify;
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  // A fence opened and not yet closed: the answer is still streaming inside a code block.
  function unclosedFence(source) {
    let open = null;
    for (const line of source.split("\n")) {
      const m = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
      if (!m) continue;
      if (open === null) open = m[1];
      else if (m[1][0] === open[0] && m[1].length >= open.length && !line.trim().slice(m[1].length).trim()) open = null;
    }
    return open !== null;
  }

  function renderMarkdown(source) {
    const text = String(source).replace(/\r\n?/g, "\n");
    const html = parser.parse(text);
    const clean = purify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, ADD_ATTR: ["target"],
      ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i, RETURN_DOM_FRAGMENT: true });
    if (unclosedFence(text)) {
      const blocks = clean.querySelectorAll(".code-block");
      if (blocks.length) blocks[blocks.length - 1].classList.add("open");
    }
    return clean;
  }

  // Render into an element, replacing what it held (used again for every streamed chunk).
  function renderInto(target, source) {
    target.replaceChildren(renderMarkdown(source));
    return target;
  }

  lucid.renderMarkdown = renderMarkdown;
  lucid.renderInto = renderInto;
})(window.lucid);
