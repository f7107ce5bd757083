// A small Markdown renderer for model answers. It builds DOM nodes and only ever sets text through
// textContent / createTextNode, so whatever the model writes (a <script> tag included) is shown as text.
// Supported: fenced code blocks, headings, lists, block quotes, rules, paragraphs, `code`, **bold**, *italic*,
// ~~strike~~ and [links](https://...). An unclosed fence (mid-stream) renders as a code block so far.
"use strict";

window.lucid = window.lucid || {};

(function (lucid) {
  const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
  // One inline element per alternative; the first that matches at a position wins.
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([^*]*?[^\s*])\*|(?<!\w)_(?=[^\s_])([^_]*?[^\s_])_(?!\w)|~~(?=\S)([\s\S]*?\S)~~|\[([^\]\n]+)\]\((\S+?)\)/g;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
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

  function renderInline(text, parent) {
    let last = 0;
    // matchAll iterates over a copy of the regex, so the recursive calls below cannot disturb its position.
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = m.index + m[0].length;
      if (m[1] !== undefined) {
        parent.appendChild(el("code", null, m[2].replace(/^ (.*) $/, "$1")));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        renderInline(m[3] !== undefined ? m[3] : m[4], parent.appendChild(el("strong")));
      } else if (m[5] !== undefined || m[6] !== undefined) {
        renderInline(m[5] !== undefined ? m[5] : m[6], parent.appendChild(el("em")));
      } else if (m[7] !== undefined) {
        renderInline(m[7], parent.appendChild(el("del")));
      } else {
        const href = safeUrl(m[9]);
        if (href) {
          const a = el("a");
          a.href = href;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          renderInline(m[8], a);
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(m[0]));
        }
      }
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
    return parent;
  }

  // Lines of a paragraph keep their breaks: chat answers use single newlines on purpose.
  function renderLines(lines, parent) {
    lines.forEach((line, i) => {
      if (i) parent.appendChild(el("br"));
      renderInline(line, parent);
    });
    return parent;
  }

  function codeBlock(lang, lines, closed) {
    const wrap = el("div", "code-block" + (closed ? "" : " open"));
    const bar = el("div", "code-bar");
    bar.appendChild(el("span", "code-lang", lang || "code"));
    const copy = el("button", "copy", "Copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy code");
    bar.appendChild(copy);
    const pre = el("pre");
    const code = el("code", lang ? "language-" + lang : null, lines.join("\n"));
    pre.appendChild(code);
    wrap.appendChild(bar);
    wrap.appendChild(pre);
    return wrap;
  }

  function renderList(lines, start) {
    // Consecutive items of one kind (bulleted or numbered) at the first item's indentation; deeper lines nest.
    const first = LIST_ITEM.exec(lines[start]);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const list = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) list.start = parseInt(first[2], 10);
    let i = start;
    while (i < lines.length) {
      const m = LIST_ITEM.exec(lines[i]);
      if (!m || m[1].length < indent || (m[1].length === indent && /\d/.test(m[2]) !== ordered)) break;
      if (m[1].length > indent) {
        const [nested, next] = renderList(lines, i);
        (list.lastChild || list.appendChild(el("li"))).appendChild(nested);
        i = next;
        continue;
      }
      const item = renderInline(m[3], el("li"));
      i += 1;
      // Continuation lines (indented, not a new item) belong to this item.
      while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !LIST_ITEM.test(lines[i])) {
        item.appendChild(el("br"));
        renderInline(lines[i].trim(), item);
        i += 1;
      }
      list.appendChild(item);
    }
    return [list, i];
  }

  function renderMarkdown(source) {
    const root = document.createDocumentFragment();
    const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) root.appendChild(renderLines(paragraph, el("p")));
      paragraph = [];
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        flush();
        const body = [];
        i += 1;
        while (i < lines.length && !(lines[i].trim().startsWith(fence[1]) && FENCE.test(lines[i]))) body.push(lines[i++]);
        const closed = i < lines.length;
        root.appendChild(codeBlock(fence[2], body, closed));
        i += 1;
        continue;
      }
      if (!line.trim()) { flush(); i += 1; continue; }
      const heading = HEADING.exec(line);
      if (heading) {
        flush();
        root.appendChild(renderInline(heading[2], el("h" + Math.min(heading[1].length + 1, 6))));
        i += 1;
        continue;
      }
      if (RULE.test(line)) { flush(); root.appendChild(el("hr")); i += 1; continue; }
      if (LIST_ITEM.test(line)) {
        flush();
        const [list, next] = renderList(lines, i);
        root.appendChild(list);
        i = next;
        continue;
      }
      if (QUOTE.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
        const block = el("blockquote");
        block.appendChild(renderMarkdown(quoted.join("\n")));
        root.appendChild(block);
        continue;
      }
      paragraph.push(line);
      i += 1;
    }
    flush();
    return root;
  }

  // Render into an element, replacing what it held (used again for every streamed chunk).
  function renderInto(target, source) {
    target.replaceChildren(renderMarkdown(source));
    return target;
  }

  lucid.renderMarkdown = renderMarkdown;
  lucid.renderInto = renderInto;
})(window.lucid);
