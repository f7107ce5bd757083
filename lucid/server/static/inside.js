// "See inside": an answer as the tokens the model chose, each colored by its probability, with the top
// alternatives the model weighed at that step shown on hover, focus or tap. Data comes from the API's
// `logprobs` (logprobs: true, top_logprobs: 5); probability = exp(logprob), as OpenAI defines it. With
// speculative decoding on (`lucid serve --speculative ngram`), a token the n-gram lookup drafted and the model
// kept carries lucid's extension `"drafted": true` and is marked with a bar on top.
"use strict";

window.lucid = window.lucid || {};

(function (lucid) {
  // Red (unlikely) through amber to green (likely), translucent so it reads on light and dark backgrounds.
  function probHue(p) {
    return Math.round(4 + 136 * Math.max(0, Math.min(1, p)));
  }

  function formatProb(p) {
    if (p >= 0.9995) return "100%";
    if (p >= 0.001) return (100 * p).toFixed(1) + "%";
    if (p > 0) return "<0.1%";
    return "0%";
  }

  // Whitespace is what a token often is; make it visible without changing the layout's line breaks.
  function visibleToken(text) {
    if (text === "") return "∅";
    return text.replace(/\t/g, "⇥").replace(/\n/g, "↵\n");
  }

  const DRAFTED = "drafted by n-gram, accepted";

  function tokenElement(item, index) {
    const p = Math.exp(item.logprob);
    const span = document.createElement("span");
    span.className = "tok";
    // One tab stop per answer (its first token); the arrow keys move between tokens (see attachPopover).
    span.tabIndex = index === 0 ? 0 : -1;
    span.dataset.index = String(index);
    span.dataset.logprob = String(item.logprob);
    span.dataset.prob = String(p);
    span.style.setProperty("--hue", String(probHue(p)));
    span.textContent = visibleToken(item.token);
    span.setAttribute("aria-label", `${JSON.stringify(item.token)}, probability ${formatProb(p)}` +
      (item.drafted ? `, ${DRAFTED}` : ""));
    if (!item.token.trim()) span.classList.add("space");
    if (item.drafted) span.classList.add("drafted");
    return span;
  }

  // Add the tokens of `items` from `from` on to `container` (called again as each streamed chunk arrives).
  // The legend's line for drafted tokens shows once the answer has one.
  function appendTokens(container, items, from) {
    let drafted = false;
    for (let i = from; i < items.length; i++) {
      container.appendChild(tokenElement(items[i], i));
      drafted = drafted || items[i].drafted === true;
    }
    const line = drafted && container.parentElement && container.parentElement.querySelector(".legend-drafted");
    if (line) line.hidden = false;
  }

  function legend() {
    const box = document.createElement("div");
    box.className = "legend";
    box.appendChild(document.createTextNode("probability of each chosen token: "));
    for (const [p, label] of [[0.02, "low"], [0.3, ""], [0.6, ""], [0.98, "high"]]) {
      const swatch = document.createElement("span");
      swatch.className = "tok swatch";
      swatch.style.setProperty("--hue", String(probHue(p)));
      swatch.textContent = label || "\u00a0";
      box.appendChild(swatch);
    }
    box.appendChild(document.createTextNode(" · hover or tap a token for the alternatives"));
    const drafted = document.createElement("div");
    drafted.className = "legend-drafted";
    drafted.hidden = true;
    const sample = document.createElement("span");
    sample.className = "tok swatch drafted";
    sample.style.setProperty("--hue", String(probHue(0.98)));
    sample.textContent = "\u00a0";
    drafted.append(sample, ` ${DRAFTED}: speculative decoding proposed it from the text so far, and one ` +
      "forward pass checked it was the model's own choice");
    box.appendChild(drafted);
    return box;
  }

  // One popover for the whole page, filled for whichever token is pointed at.
  function popover() {
    let pop = document.getElementById("token-popover");
    if (!pop) {
      pop = document.createElement("div");
      pop.id = "token-popover";
      pop.setAttribute("role", "tooltip");
      pop.hidden = true;
      document.body.appendChild(pop);
    }
    return pop;
  }

  function fillPopover(pop, item) {
    pop.replaceChildren();
    const head = document.createElement("div");
    head.className = "pop-head";
    const chosen = document.createElement("code");
    chosen.textContent = JSON.stringify(item.token);
    head.append("chose ", chosen, ` · p ${formatProb(Math.exp(item.logprob))} · logprob ${item.logprob.toFixed(3)}`);
    pop.appendChild(head);
    if (item.drafted) {
      const note = document.createElement("div");
      note.className = "pop-drafted";
      note.textContent = `⚡ ${DRAFTED}`;
      pop.appendChild(note);
    }
    const table = document.createElement("table");
    for (const alt of item.top_logprobs || []) {
      const p = Math.exp(alt.logprob);
      const row = table.insertRow();
      if (alt.token === item.token) row.className = "chosen";
      const tok = row.insertCell();
      const code = document.createElement("code");
      code.textContent = JSON.stringify(alt.token);
      tok.appendChild(code);
      const bar = row.insertCell();
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${Math.max(1, Math.round(100 * p))}%`;
      fill.style.setProperty("--hue", String(probHue(p)));
      bar.appendChild(fill);
      const prob = row.insertCell();
      prob.className = "num";
      prob.textContent = formatProb(p);
      prob.dataset.prob = String(p);
    }
    pop.appendChild(table);
  }

  function place(pop, target) {
    const r = target.getBoundingClientRect();
    pop.hidden = false;
    const w = pop.offsetWidth;
    const h = pop.offsetHeight;
    const left = Math.max(8, Math.min(window.innerWidth - w - 8, r.left + r.width / 2 - w / 2));
    const below = r.bottom + 8 + h < window.innerHeight;
    pop.style.left = `${left + window.scrollX}px`;
    pop.style.top = `${(below ? r.bottom + 8 : r.top - h - 8) + window.scrollY}px`;
  }

  let current = null;  // the token whose alternatives are shown

  function hidePopover() {
    if (current) current.classList.remove("active");
    current = null;
    const pop = document.getElementById("token-popover");
    if (pop) pop.hidden = true;
  }

  document.addEventListener("click", hidePopover);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hidePopover(); });
  window.addEventListener("resize", hidePopover);

  // Wire hover / focus / tap on a message's token container; `getItems()` returns that message's logprobs.
  function attachPopover(container, getItems) {
    const show = (span) => {
      const item = getItems()[Number(span.dataset.index)];
      if (!item || span === current) return;
      if (current) current.classList.remove("active");
      current = span;
      span.classList.add("active");
      const pop = popover();
      fillPopover(pop, item);
      place(pop, span);
    };
    const tokenOf = (event) => event.target.closest && event.target.closest(".tok[data-index]");
    container.addEventListener("mouseover", (e) => { const t = tokenOf(e); if (t) show(t); });
    container.addEventListener("mouseleave", hidePopover);
    container.addEventListener("focusin", (e) => { const t = tokenOf(e); if (t) show(t); });
    container.addEventListener("focusout", (e) => { if (!container.contains(e.relatedTarget)) hidePopover(); });
    container.addEventListener("keydown", (e) => {
      const t = tokenOf(e);
      if (!t || (e.key !== "ArrowRight" && e.key !== "ArrowLeft")) return;
      const next = container.querySelector(`.tok[data-index="${Number(t.dataset.index) + (e.key === "ArrowRight" ? 1 : -1)}"]`);
      if (next) { next.focus(); e.preventDefault(); }
    });
    // A tap shows the token (touch screens have no hover); a tap elsewhere hides it (the document listener).
    container.addEventListener("click", (e) => { const t = tokenOf(e); if (t) { show(t); e.stopPropagation(); } });
  }

  lucid.formatProb = formatProb;
  lucid.appendTokens = appendTokens;
  lucid.tokenLegend = legend;
  lucid.attachPopover = attachPopover;
})(window.lucid);
