// The chat page: a conversation with the server's /v1/chat/completions, streamed over server-sent events.
// Plain browser JavaScript, no libraries. Model text reaches the page only through markdown.js / inside.js,
// which set text with textContent, never innerHTML.
"use strict";

(function (lucid) {
  const $ = (id) => document.getElementById(id);
  const SETTINGS_KEY = "lucid.chat.settings";
  const SETTINGS = ["system", "temperature", "top-p", "max-tokens", "api-key"];

  const state = {
    history: [],        // {role, content} sent back to the server on each turn
    controller: null,   // the AbortController of the answer being streamed
    model: null,        // the first name /v1/models lists
  };

  // ---- settings ------------------------------------------------------------------------------------------
  function loadSettings() {
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}"); } catch (_) { saved = {}; }
    for (const id of SETTINGS) if (typeof saved[id] === "string") $(id).value = saved[id];
    $("inside-toggle").checked = saved.inside === true;
    applyInside();
    syncOutputs();
  }

  function saveSettings() {
    const saved = { inside: $("inside-toggle").checked };
    for (const id of SETTINGS) saved[id] = $(id).value;
    try { localStorage.setItem(SETTINGS_KEY, JSON.stringify(saved)); } catch (_) { /* private mode: not kept */ }
  }

  function syncOutputs() {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
    $("top-p-value").textContent = Number($("top-p").value).toFixed(2);
  }

  function applyInside() {
    document.body.classList.toggle("inside", $("inside-toggle").checked);
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  // ---- messages ------------------------------------------------------------------------------------------
  function addMessage(role, text) {
    $("empty").hidden = true;
    const msg = document.createElement("article");
    msg.className = `msg ${role}`;
    msg.dataset.role = role;
    const label = document.createElement("div");
    label.className = "who";
    label.textContent = role === "user" ? "You" : "lucid";
    const body = document.createElement("div");
    body.className = "body";
    msg.append(label, body);
    if (role === "user") {
      body.classList.add("plain");
      body.textContent = text;
    } else {
      const md = document.createElement("div");
      md.className = "md";
      const tokens = document.createElement("div");
      tokens.className = "tokens";
      const meta = document.createElement("div");
      meta.className = "meta";
      body.append(md, tokens);
      msg.append(meta);
    }
    $("messages").appendChild(msg);
    scrollToEnd(true);
    return msg;
  }

  function nearBottom() {
    const box = $("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  }

  function scrollToEnd(force) {
    const box = $("messages");
    if (force || nearBottom()) box.scrollTop = box.scrollHeight;
  }

  function setBusy(busy) {
    document.body.classList.toggle("busy", busy);
    $("send").hidden = busy;
    $("stop").hidden = !busy;
  }

  // ---- streaming -----------------------------------------------------------------------------------------
  // Server-sent events: frames separated by a blank line, each `data: <json>`; `data: [DONE]` ends the stream.
  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      const frames = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : frames.pop();
      for (const frame of frames) {
        const data = frame.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
      // The server always ends with [DONE]; a stream that stops before it was cut off on the way.
      if (done) throw new Error("the connection closed before the answer was complete");
    }
  }

  async function errorMessage(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) message += " (set the API key in the settings)";
    return message;
  }

  function requestBody() {
    const messages = [];
    const system = $("system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...state.history);
    const body = {
      messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 512),
      logprobs: true,
      top_logprobs: 5,
    };
    if (state.model) body.model = state.model;
    return body;
  }

  function describeStats(answer, started) {
    const parts = [];
    const n = answer.usage ? answer.usage.completion_tokens : answer.tokens.length;
    if (answer.usage || n) parts.push(`${n} token${n === 1 ? "" : "s"}`);
    const end = answer.lastAt || performance.now();
    // Decode speed: tokens after the first, over the time since the first (the prompt's prefill excluded).
    if (n > 1 && answer.firstAt && end > answer.firstAt) parts.push(`${((n - 1) / ((end - answer.firstAt) / 1000)).toFixed(1)} tok/s`);
    if (answer.firstAt) parts.push(`first token ${((answer.firstAt - started) / 1000).toFixed(2)} s`);
    if (answer.finish === "length") parts.push("hit max tokens");
    if (answer.stopped) parts.push("stopped");
    return parts.join(" · ");
  }

  async function send(text) {
    state.history.push({ role: "user", content: text });
    addMessage("user", text);
    const msg = addMessage("assistant");
    msg.classList.add("streaming");
    const md = msg.querySelector(".md");
    const tokensBox = msg.querySelector(".tokens");
    const meta = msg.querySelector(".meta");
    const answer = { text: "", tokens: [], toolCalls: [], finish: null, usage: null, firstAt: 0, lastAt: 0,
                     stopped: false };
    const toolsBox = document.createElement("div");
    toolsBox.className = "tool-calls";
    toolsBox.hidden = true;
    md.after(toolsBox);
    lucid.attachPopover(tokensBox, () => answer.tokens);
    tokensBox.appendChild(lucid.tokenLegend());
    const line = document.createElement("div");
    line.className = "token-line";
    tokensBox.appendChild(line);

    let shownTokens = 0;
    let pending = false;
    const render = () => {
      pending = false;
      if (!lucid.toolCalls.renderJsonAnswer(md, answer.text)) lucid.renderInto(md, answer.text);
      lucid.toolCalls.render(toolsBox, answer.toolCalls);
      lucid.appendTokens(line, answer.tokens, shownTokens);
      shownTokens = answer.tokens.length;
      scrollToEnd(false);
    };
    const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(render); } };

    const controller = new AbortController();
    state.controller = controller;
    setBusy(true);
    const started = performance.now();
    const body = requestBody();
    msg.request = structuredClone(body);  // the glass box (glassbox.js) explains and forks this answer from what was asked
    msg.answer = answer;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const data of sseEvents(response)) {
        if (data.error) throw new Error(data.error.message || "the server reported an error");
        if (data.usage) answer.usage = data.usage;
        for (const choice of data.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) {
            answer.text += delta.content;
            answer.firstAt = answer.firstAt || performance.now();
          }
          if (delta.tool_calls) {
            lucid.toolCalls.merge(answer.toolCalls, delta.tool_calls);
            answer.firstAt = answer.firstAt || performance.now();
          }
          if (choice.logprobs && choice.logprobs.content) answer.tokens.push(...choice.logprobs.content);
          if (choice.finish_reason) answer.finish = choice.finish_reason;
        }
        answer.lastAt = performance.now();
        schedule();
      }
    } catch (err) {
      if (err.name === "AbortError") {
        answer.stopped = true;
      } else {
        const error = document.createElement("div");
        error.className = "error";
        error.setAttribute("role", "alert");
        error.textContent = err.message || String(err);
        msg.querySelector(".body").appendChild(error);
      }
    } finally {
      render();
      msg.classList.remove("streaming");
      meta.textContent = describeStats(answer, started);
      state.controller = null;
      setBusy(false);
    }
    msg.dataset.turn = String(state.history.length);  // where this answer sits in the history (branch switches)
    if (answer.text) state.history.push({ role: "assistant", content: answer.text });
    else state.history.pop();  // nothing came back: let the user's turn be sent again with the next message
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function newChat() {
    stop();
    state.history = [];
    $("messages").querySelectorAll(".msg").forEach((m) => m.remove());
    $("empty").hidden = false;
    $("prompt").value = "";
    autoGrow();
    $("prompt").focus();
  }

  async function loadModel() {
    try {
      const response = await fetch("/v1/models", { headers: headers() });
      if (!response.ok) {
        $("model-name").textContent = response.status === 401 ? "API key needed" : "model unavailable";
        return;
      }
      const body = await response.json();
      state.model = body.data && body.data[0] ? body.data[0].id : null;
      $("model-name").textContent = state.model || "";
    } catch (_) {
      $("model-name").textContent = "server unreachable";
    }
  }

  function autoGrow() {
    const box = $("prompt");
    box.style.height = "auto";
    box.style.height = `${Math.min(box.scrollHeight, 220)}px`;
  }

  // ---- wiring --------------------------------------------------------------------------------------------
  function init() {
    loadSettings();
    loadModel();
    $("settings-form").addEventListener("submit", (e) => e.preventDefault());
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("prompt").value.trim();
      if (!text || state.controller) return;
      $("prompt").value = "";
      autoGrow();
      send(text);
    });
    $("prompt").addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter is a new line; never while an input method is composing (Chinese, Japanese).
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("prompt").addEventListener("input", autoGrow);
    $("stop").addEventListener("click", stop);
    $("new-chat").addEventListener("click", newChat);
    $("settings-toggle").addEventListener("click", () => {
      const open = document.body.classList.toggle("show-settings");
      $("settings-toggle").setAttribute("aria-expanded", String(open));
    });
    $("inside-toggle").addEventListener("change", () => { applyInside(); saveSettings(); });
    for (const id of SETTINGS) $(id).addEventListener("input", () => { syncOutputs(); saveSettings(); });
    $("api-key").addEventListener("change", loadModel);
    document.querySelectorAll("#empty .suggestion").forEach((b) => b.addEventListener("click", () => {
      $("prompt").value = b.textContent;
      $("composer").requestSubmit();
    }));
    document.addEventListener("click", (e) => {
      const copy = e.target.closest && e.target.closest(".copy");
      if (!copy) return;
      const code = copy.closest(".code-block").querySelector("code").textContent;
      navigator.clipboard.writeText(code).then(() => {
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = "Copy"; }, 1200);
      }, () => { copy.textContent = "Copy failed"; });
    });
    $("prompt").focus();
  }

  lucid.chat = { state, send, stop, newChat, sseEvents, headers, errorMessage, describeStats };
  document.addEventListener("DOMContentLoaded", init);
})(window.lucid);
