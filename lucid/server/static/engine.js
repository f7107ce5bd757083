// The engine view: polls GET /glassbox/engine twice a second (which keeps the engine's step recorder on; it stops
// by itself a few seconds after the last poll, so a closed or hidden page costs the engine nothing) and draws the
// KV pool as a grid of blocks and the steps as a timeline. Plain browser JavaScript, text set with textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 500;
  const MAX_ROWS = 400;
  const view = { last: 0, pool: null, steps: [], colors: new Map() };
  window.lucidEngine = view;   // for tests and the curious: the latest data as received

  function apiKey() {
    try { return (JSON.parse(localStorage.getItem("lucid.chat.settings") || "{}")["api-key"] || "").trim(); }
    catch (_) { return ""; }
  }

  // One stable hue per request, spread by the golden angle so neighbours differ.
  function colorOf(requestId) {
    if (!view.colors.has(requestId)) view.colors.set(requestId, Math.round((view.colors.size * 137.508) % 360));
    return view.colors.get(requestId);
  }

  const shortId = (id) => (id.length > 14 ? id.slice(0, 6) + "…" + id.slice(-5) : id);
  const requestOf = (owner) => owner.replace(/#\d+$/, "");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function drawPool(pool) {
    const canvas = $("pool");
    const width = canvas.clientWidth || 800;
    const cell = pool.num_blocks > 4000 ? 9 : pool.num_blocks > 1000 ? 12 : 16;
    const cols = Math.max(1, Math.floor(width / cell));
    const rows = Math.ceil(pool.num_blocks / cols);
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio;
    canvas.height = rows * cell * ratio;
    canvas.style.height = `${rows * cell}px`;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    ctx.fillStyle = dark ? "#2a2a2e" : "#ececea";
    for (let b = 0; b < pool.num_blocks; b++) {
      ctx.fillRect((b % cols) * cell + 1, Math.floor(b / cols) * cell + 1, cell - 2, cell - 2);
    }
    ctx.fillStyle = dark ? "#8a8a90" : "#a9a9ae";
    for (const b of pool.cached_free) {
      const x = (b % cols) * cell;
      const y = Math.floor(b / cols) * cell;
      ctx.fillRect(x + 1, y + 1, cell - 2, cell - 2);
      ctx.fillStyle = dark ? "#2a2a2e" : "#ffffff";
      ctx.fillRect(x + cell / 2 - 1, y + cell / 2 - 1, 2, 2);
      ctx.fillStyle = dark ? "#8a8a90" : "#a9a9ae";
    }
    for (const block of pool.used) {
      const x = (block.block % cols) * cell;
      const y = Math.floor(block.block / cols) * cell;
      const owner = block.owners.length ? requestOf(block.owners[0]) : "?";
      ctx.fillStyle = `hsl(${colorOf(owner)} 70% ${dark ? 55 : 50}%)`;
      ctx.fillRect(x + 1, y + 1, cell - 2, cell - 2);
      if (block.ref_count > 1) {
        ctx.strokeStyle = dark ? "#ffffff" : "#000000";
        ctx.lineWidth = 1.5;
        ctx.strokeRect(x + 1.5, y + 1.5, cell - 3, cell - 3);
        if (cell >= 12) {
          ctx.fillStyle = dark ? "#000" : "#fff";
          ctx.font = `${cell - 5}px sans-serif`;
          ctx.textAlign = "center";
          ctx.textBaseline = "middle";
          ctx.fillText(String(block.ref_count), x + cell / 2, y + cell / 2 + 0.5);
        }
      }
    }
  }

  function describePool(pool) {
    const shared = pool.used.filter((b) => b.ref_count > 1);
    const summary = $("pool-summary");
    summary.dataset.used = String(pool.used.length);
    summary.dataset.shared = String(shared.length);
    summary.dataset.sharedRefCounts = shared.map((b) => b.ref_count).join(",");
    summary.dataset.cachedFree = String(pool.cached_free.length);
    summary.textContent = `${pool.used.length} of ${pool.num_blocks} blocks in use · ${shared.length} shared ` +
      `(ref count > 1) · ${pool.cached_free.length} free with a cached prefix · ${pool.num_free} free`;
    $("block-size").textContent = String(pool.block_size);
    const counts = new Map();
    for (const block of pool.used) {
      for (const owner of block.owners) counts.set(requestOf(owner), (counts.get(requestOf(owner)) || 0) + 1);
    }
    const list = $("owners");
    list.replaceChildren();
    for (const [request, n] of counts) {
      const li = el("li");
      const swatch = el("span", "swatch");
      swatch.style.background = `hsl(${colorOf(request)} 70% 50%)`;
      li.append(swatch, `${shortId(request)}: ${n} block${n === 1 ? "" : "s"}`);
      li.title = request;
      list.appendChild(li);
    }
  }

  function addSteps(steps) {
    const body = $("steps").tBodies[0];
    for (const step of steps) {
      const tr = document.createElement("tr");
      tr.dataset.step = String(step.step);
      tr.insertCell().textContent = String(step.step);
      tr.insertCell().textContent = (1000 * step.seconds).toFixed(1);
      const items = tr.insertCell();
      let tokens = 0;
      for (const item of step.items) {
        tokens += item.tokens;
        const chip = el("span", `item ${item.kind}`);
        chip.dataset.request = item.request_id;
        chip.dataset.kind = item.kind;
        chip.dataset.tokens = String(item.tokens);
        chip.style.background = `hsl(${colorOf(item.request_id)} 70% 50% / 0.28)`;
        chip.textContent = item.kind === "prefill"
          ? `${shortId(item.request_id)} prefill ${item.tokens} @${item.start}`
          : `${shortId(item.request_id)} decode`;
        chip.title = item.request_id;
        items.appendChild(chip);
      }
      tr.insertCell().textContent = String(tokens);
      tr.insertCell().textContent = String(step.waiting);
      tr.insertCell().textContent = step.preempted.length ? step.preempted.map(shortId).join(", ") : "";
      body.prepend(tr);
    }
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    view.steps.push(...steps);
    if (view.steps.length > 5000) view.steps.splice(0, view.steps.length - 5000);
  }

  async function poll() {
    if (document.hidden) return;   // a hidden page stops polling; the recorder then lapses by itself
    const headers = {};
    const key = apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    try {
      const response = await fetch(`/glassbox/engine?after=${view.last}`, { headers });
      if (!response.ok) {
        $("live").textContent = response.status === 401 ? "API key needed (set it on the chat page)"
          : `server answered ${response.status}`;
        return;
      }
      const data = await response.json();
      view.last = data.last;
      view.pool = data.pool;
      $("model-name").textContent = data.model;
      addSteps(data.steps);
      drawPool(data.pool);
      describePool(data.pool);
      const s = data.stats;
      $("live").textContent = `live · ${s.num_running} running · ${s.num_waiting} waiting · step ${s.num_steps}` +
        ` · ${s.num_preemptions} preemptions`;
    } catch (_) {
      $("live").textContent = "server unreachable";
    }
  }

  async function loop() {
    await poll();
    setTimeout(loop, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", loop);
  window.addEventListener("resize", () => { if (view.pool) drawPool(view.pool); });
})();
