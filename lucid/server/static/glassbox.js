// The glass box on the chat page. Click a token (with "See inside" on) and a panel opens under the answer:
//  - the logit lens: what the model would have said after the embedding and after each layer (POST /glassbox/token),
//  - where it looked: the attention of the query that chose the token, drawn over the text, per layer and head,
//  - fork here: the alternatives it weighed, each with a button that continues the answer from it
//    (POST /glassbox/fork, streamed); every fork becomes a branch of the answer, switchable with ‹ ›.
// Model text is only ever set with textContent.
"use strict";

(function (lucid) {
  const ROUGH_NOTE = "Early layers are read through the final norm and head they were not trained for: their " +
    "guesses are rough (the logit lens is known to be unreliable there).";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const decoder = new TextDecoder();
  const textOf = (items) => decoder.decode(new Uint8Array(items.flatMap((t) => t.bytes || [])));
  const visible = (text) => (text === "" ? "∅" : text.replace(/\n/g, "↵").replace(/\t/g, "⇥"));
  const pct = (p) => lucid.formatProb(p);

  async function postJson(url, body, signal) {
    const response = await fetch(url, { method: "POST", headers: lucid.chat.headers(), body: JSON.stringify(body),
      signal });
    if (!response.ok) throw new Error(await lucid.chat.errorMessage(response));
    return response;
  }

  // ---- branches ----------------------------------------------------------------------------------------------
  // msg.branches[i] = {tokens, label}; branch 0 is the answer as streamed. Switching puts the branch's tokens in
  // place of the answer's (the popover reads msg.answer.tokens) and its text into the conversation history.
  function branches(msg) {
    if (!msg.branches) msg.branches = [{ tokens: msg.answer.tokens.slice(), label: "original" }];
    return msg.branches;
  }

  function showBranch(msg, index) {
    const all = branches(msg);
    msg.branchIndex = index;
    const branch = all[index];
    msg.answer.tokens.splice(0, msg.answer.tokens.length, ...branch.tokens);
    msg.answer.text = textOf(branch.tokens);
    lucid.renderInto(msg.querySelector(".md"), msg.answer.text);
    const line = msg.querySelector(".token-line");
    line.replaceChildren();
    lucid.appendTokens(line, msg.answer.tokens, 0);
    const turn = Number(msg.dataset.turn);
    const history = lucid.chat.state.history;
    if (history[turn] && history[turn].role === "assistant") history[turn].content = msg.answer.text;
    let bar = msg.querySelector(".branch-bar");
    if (!bar) {
      bar = el("div", "branch-bar");
      msg.querySelector(".body").prepend(bar);
    }
    bar.replaceChildren();
    const prev = el("button", "ghost", "‹");
    prev.type = "button";
    prev.setAttribute("aria-label", "previous branch");
    prev.disabled = index === 0;
    prev.addEventListener("click", () => showBranch(msg, index - 1));
    const next = el("button", "ghost", "›");
    next.type = "button";
    next.setAttribute("aria-label", "next branch");
    next.disabled = index === all.length - 1;
    next.addEventListener("click", () => showBranch(msg, index + 1));
    bar.append(prev, el("span", "branch-label", `branch ${index + 1}/${all.length} · ${branch.label}`), next);
  }

  // ---- the panel ---------------------------------------------------------------------------------------------
  function panelOf(msg) {
    let panel = msg.querySelector(".glassbox");
    if (!panel) {
      panel = el("section", "glassbox");
      panel.setAttribute("aria-label", "Glass box");
      msg.querySelector(".body").appendChild(panel);
    }
    return panel;
  }

  function sequenceBody(msg, upTo, last) {
    // The conversation as sent, then the answer's tokens before `upTo`, then `last` (a token's bytes).
    const before = msg.answer.tokens.slice(0, upTo).map((t) => t.bytes);
    return { messages: msg.request.messages, completion: [...before, last] };
  }

  async function explain(msg, index) {
    const item = msg.answer.tokens[index];
    if (!item || !msg.request) return;
    const panel = panelOf(msg);
    panel.replaceChildren();
    const head = el("div", "gb-head");
    const close = el("button", "ghost gb-close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Close the glass box");
    close.addEventListener("click", () => panel.remove());
    const chosen = el("code", null, JSON.stringify(item.token));
    head.append("token ", chosen, ` · #${index + 1} of the answer · p ${pct(Math.exp(item.logprob))}`, close);
    panel.append(head, forkSection(msg, index, item));
    const status = el("p", "gb-status", "Looking inside…");
    panel.appendChild(status);
    try {
      const response = await postJson("/glassbox/token", sequenceBody(msg, index, item.bytes));
      const data = await response.json();
      status.remove();
      panel.append(lensSection(data.lens), attentionSection(data.attention, data));
    } catch (err) {
      status.textContent = err.message || String(err);
      status.classList.add("error");
    }
  }

  function lensSection(lens) {
    const box = el("div", "gb-lens");
    box.appendChild(el("h3", null, "When did it decide? (logit lens)"));
    box.appendChild(el("p", "gb-note", "Each row reads the residual stream after that layer through the final " +
      "norm and the head: the model's best guesses had it stopped there, and the chosen token's rank and " +
      "probability. " + ROUGH_NOTE));
    const table = el("table", "lens-table");
    const header = table.createTHead().insertRow();
    for (const name of ["after", "top 3", "chosen: rank", "p"]) header.appendChild(el("th", null, name));
    const body = table.createTBody();
    for (const row of lens.rows) {
      const tr = body.insertRow();
      tr.className = "lens-row" + (row.rough ? " rough" : "") + (row.rank === 1 ? " decided" : "");
      tr.insertCell().textContent = row.label + (row.rough ? " · rough" : "");
      const tops = tr.insertCell();
      tops.className = "lens-top";
      for (const c of row.top) {
        const chip = el("span", "lens-chip" + (c.token_id === lens.token_id ? " chosen" : ""));
        chip.append(el("code", null, visible(c.text)), ` ${pct(c.prob)}`);
        chip.dataset.prob = String(c.prob);
        tops.appendChild(chip);
      }
      const rank = tr.insertCell();
      rank.className = "num lens-rank";
      rank.textContent = String(row.rank);
      const prob = tr.insertCell();
      prob.className = "num lens-prob";
      prob.dataset.prob = String(row.prob);
      const bar = el("span", "lens-bar");
      bar.style.width = `${Math.max(1, Math.round(100 * row.prob))}%`;
      prob.append(bar, el("span", null, pct(row.prob)));
    }
    box.appendChild(table);
    return box;
  }

  function attentionSection(view, data) {
    const box = el("div", "gb-attention");
    box.appendChild(el("h3", null, "Where did it look? (attention)"));
    box.appendChild(el("p", "gb-note", `The query at position ${view.position} (the one that chose this token) ` +
      "over every earlier position: darker = more attention. Pick a layer and all heads averaged or one head; " +
      `heads come in ${view.num_kv_heads} groups of ${view.group} that share a key/value head. ` +
      `The probe reused ${data.reused_tokens} cached positions and computed ${data.computed_tokens}.`));
    const controls = el("div", "gb-controls");
    const layerLabel = el("label", null, "layer ");
    const layer = el("select", "gb-layer");
    layer.appendChild(new Option("all layers (mean)", "all"));
    for (const l of view.layers) layer.appendChild(new Option(`layer ${l.layer}`, String(l.layer)));
    layerLabel.appendChild(layer);
    const headLabel = el("label", null, " heads ");
    const head = el("select", "gb-head-select");
    head.appendChild(new Option("mean of all heads", "mean"));
    const heads = view.layers[0].heads.length;
    for (let h = 0; h < heads; h++) head.appendChild(new Option(`head ${h} (KV group ${Math.floor(h / view.group)})`, String(h)));
    headLabel.appendChild(head);
    controls.append(layerLabel, headLabel);
    const text = el("div", "gb-text token-line");
    const top = el("ol", "gb-sources");
    const draw = () => {
      const weights = weightsFor(view, layer.value, head.value);
      const max = Math.max(...weights, 1e-9);
      text.replaceChildren();
      weights.forEach((w, i) => {
        const span = el("span", "att-tok", visible(view.tokens[i]));
        span.dataset.position = String(i);
        span.dataset.weight = String(w);
        span.style.setProperty("--a", (w / max).toFixed(3));
        span.title = `position ${i} · ${(100 * w).toFixed(2)}%`;
        text.appendChild(span);
      });
      top.replaceChildren();
      weights.map((w, i) => [w, i]).sort((a, b) => b[0] - a[0]).slice(0, 5).forEach(([w, i]) => {
        const li = el("li", "gb-source");
        li.dataset.position = String(i);
        li.append(el("code", null, JSON.stringify(view.tokens[i])), ` at ${i} · ${(100 * w).toFixed(1)}%`);
        top.appendChild(li);
      });
    };
    layer.addEventListener("change", draw);
    head.addEventListener("change", draw);
    box.append(controls, text, el("div", "gb-sources-title", "strongest sources"), top);
    draw();
    return box;
  }

  function weightsFor(view, layer, head) {
    const layers = layer === "all" ? view.layers : view.layers.filter((l) => String(l.layer) === layer);
    const out = new Array(view.position + 1).fill(0);
    for (const l of layers) {
      const row = head === "mean" ? l.mean : l.heads[Number(head)];
      row.forEach((w, i) => { out[i] += w / layers.length; });
    }
    return out;
  }

  // ---- fork here ---------------------------------------------------------------------------------------------
  function forkSection(msg, index, item) {
    const box = el("div", "gb-fork");
    box.appendChild(el("h3", null, "Fork here"));
    box.appendChild(el("p", "gb-note", "Continue the answer from another token the model weighed here. The fork " +
      "reuses the cached keys and values of everything before it."));
    const list = el("div", "gb-alts");
    for (const alt of item.top_logprobs || []) {
      const button = el("button", "ghost gb-alt");
      button.type = "button";
      button.dataset.token = alt.token;
      button.append(el("code", null, JSON.stringify(alt.token)), ` ${pct(Math.exp(alt.logprob))}`);
      if (alt.token === item.token) button.classList.add("chosen");
      button.addEventListener("click", () => fork(msg, index, alt, box));
      list.appendChild(button);
    }
    box.appendChild(list);
    return box;
  }

  async function fork(msg, index, alt, box) {
    if (lucid.chat.state.controller || !alt.bytes || !alt.bytes.length) return;
    const status = box.querySelector(".gb-fork-status") || box.appendChild(el("p", "gb-fork-status"));
    status.textContent = `Forking at token ${index + 1} with ${JSON.stringify(alt.token)}…`;
    const request = msg.request;
    const tokens = msg.answer.tokens.slice(0, index);
    tokens.push({ token: alt.token, logprob: alt.logprob, bytes: alt.bytes, top_logprobs: msg.answer.tokens[index].top_logprobs });
    const body = { ...sequenceBody(msg, index, alt.bytes), temperature: request.temperature, top_p: request.top_p,
      max_tokens: Math.max(1, request.max_tokens - index - 1), top_logprobs: 5 };
    try {
      const response = await postJson("/glassbox/fork", body);
      let reuse = null;
      for await (const data of lucid.chat.sseEvents(response)) {
        if (data.error) throw new Error(data.error.message || "the server reported an error");
        if (data.fork) { reuse = data.fork; continue; }
        for (const choice of data.choices || []) {
          if (choice.logprobs && choice.logprobs.content) tokens.push(...choice.logprobs.content);
        }
        status.textContent = `Forking… ${tokens.length - index} tokens`;
      }
      const all = branches(msg);
      all.push({ tokens, label: `fork at ${index + 1}: ${JSON.stringify(alt.token)}`, reuse });
      status.textContent = reuse ? `${reuse.reused_tokens} tokens reused, ${reuse.computed_tokens} computed` : "";
      status.dataset.reused = reuse ? String(reuse.reused_tokens) : "";
      showBranch(msg, all.length - 1);
    } catch (err) {
      status.textContent = err.message || String(err);
      status.classList.add("error");
    }
  }

  // Clicks on tokens: captured on the way down, before inside.js's own click handler stops them.
  function init() {
    document.getElementById("messages").addEventListener("click", (e) => {
      const tok = e.target.closest && e.target.closest(".tokens .tok[data-index]");
      if (!tok) return;
      const msg = tok.closest(".msg");
      if (!msg || msg.classList.contains("streaming")) return;
      explain(msg, Number(tok.dataset.index));
    }, true);
  }

  lucid.glassbox = { explain, fork, showBranch };
  document.addEventListener("DOMContentLoaded", init);
})(window.lucid);
