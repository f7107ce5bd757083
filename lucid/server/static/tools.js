// Tool calls and JSON answers on the chat page. A streamed tool call arrives as OpenAI deltas (the first carries
// the call's index, id and function name; later ones fragments of its arguments): they are merged here and shown
// as the function's name and its arguments, pretty-printed once they parse. An answer that is a whole JSON object
// or array (response_format json_object / json_schema) is shown pretty-printed too. Text only ever goes through
// textContent.
"use strict";

window.lucid = window.lucid || {};

(function (lucid) {
  // Indented JSON for text that is a JSON object or array, else null.
  function pretty(text) {
    try {
      const value = JSON.parse(text);
      if (value !== null && typeof value === "object") return JSON.stringify(value, null, 2);
    } catch (err) { /* not (yet) JSON */ }
    return null;
  }

  // Merge one chunk's delta.tool_calls into the answer's calls (an array indexed by the call's index).
  function merge(calls, deltas) {
    for (const d of deltas || []) {
      const call = calls[d.index] || (calls[d.index] = { id: "", name: "", arguments: "" });
      if (d.id) call.id = d.id;
      const fn = d.function || {};
      if (fn.name) call.name += fn.name;
      if (fn.arguments) call.arguments += fn.arguments;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Show the calls in `box` (its previous content replaced): name, then arguments.
  function render(box, calls) {
    box.replaceChildren();
    box.hidden = !calls.length;
    for (const call of calls.filter(Boolean)) {
      const item = el("div", "tool-call");
      const head = el("div", "tool-call-name");
      head.append(el("span", "tool-call-label", "calls "), el("code", "", call.name + "(…)"));
      item.append(head, el("pre", "tool-call-args", pretty(call.arguments) ?? call.arguments));
      box.appendChild(item);
    }
  }

  // Render a complete JSON answer pretty into `md`; false (nothing done) when the text is not JSON.
  function renderJsonAnswer(md, text) {
    const indented = pretty(text.trim());
    if (indented === null) return false;
    md.replaceChildren(el("pre", "json-answer", indented));
    return true;
  }

  lucid.toolCalls = { pretty, merge, render, renderJsonAnswer };
})(window.lucid);
