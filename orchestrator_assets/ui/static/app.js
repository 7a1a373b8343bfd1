// The review UI's behaviour: line comments that become the steer prompt, and live updates
// (server-sent events say when the event log moved; the page's live parts are fetched again).
"use strict";

(function () {
  let dirty = false;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addComment(path, line, text, row) {
    const list = document.getElementById("comments");
    const value = `${path}:${line}: ${text}`;
    const item = el("div", { class: "comment" });
    item.appendChild(el("code", {}, `${path}:${line}`));
    item.appendChild(el("span", {}, " " + text + " "));
    const input = el("input", { type: "hidden", name: "comment", value: value });
    item.appendChild(input);
    const remove = el("button", { type: "button", class: "link" }, "remove");
    item.appendChild(remove);
    list.appendChild(item);
    const shown = el("tr", { class: "comment-row" });
    const cell = el("td", { colspan: "4" });
    cell.appendChild(el("span", { class: "comment-bubble" }, `comment: ${text}`));
    shown.appendChild(cell);
    row.after(shown);
    remove.addEventListener("click", () => { item.remove(); shown.remove(); });
    dirty = true;
  }

  function openEditor(cell) {
    const row = cell.closest("tr");
    if (row.nextElementSibling && row.nextElementSibling.classList.contains("comment-editor")) return;
    const path = cell.dataset.path, line = cell.dataset.line;
    const editor = el("tr", { class: "comment-editor" });
    const td = el("td", { colspan: "4" });
    td.appendChild(el("div", { class: "muted" }, `Comment on ${path}:${line}`));
    const area = el("textarea", { rows: "2", class: "comment-text" });
    td.appendChild(area);
    const add = el("button", { type: "button", class: "add-comment" }, "Add comment");
    const cancel = el("button", { type: "button", class: "link" }, "cancel");
    td.appendChild(add);
    td.appendChild(cancel);
    editor.appendChild(td);
    row.after(editor);
    area.focus();
    add.addEventListener("click", () => {
      const text = area.value.trim();
      if (!text) { area.focus(); return; }
      editor.remove();
      addComment(path, line, text, row);
    });
    cancel.addEventListener("click", () => editor.remove());
  }

  document.addEventListener("click", (event) => {
    const cell = event.target.closest("td.ln.c");
    if (cell) openEditor(cell);
  });
  document.addEventListener("change", (event) => {
    if (event.target.closest("#review-form")) dirty = true;
  });

  async function refresh() {
    const response = await fetch(location.href, { headers: { "X-Live": "1" } });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const old of document.querySelectorAll("[data-live][id]")) {
      const fresh = doc.getElementById(old.id);
      if (!fresh) continue;
      if (old.dataset.version !== undefined && old.dataset.version !== fresh.dataset.version) {
        document.getElementById("updated").hidden = false;  // the diff below is an old one
      }
      const open = new Set([...old.querySelectorAll("details[id][open]")].map((d) => d.id));
      const closed = new Set([...old.querySelectorAll("details[id]:not([open])")].map((d) => d.id));
      old.replaceWith(fresh);
      for (const d of fresh.querySelectorAll("details[id]")) {
        if (open.has(d.id)) d.open = true;
        if (closed.has(d.id)) d.open = false;
      }
    }
    document.body.dataset.position = doc.body.dataset.position;
  }

  function live() {
    if (!window.EventSource) return;
    const indicator = document.getElementById("live");
    const source = new EventSource("/events");
    source.addEventListener("open", () => indicator.classList.add("on"));
    source.addEventListener("error", () => indicator.classList.remove("on"));
    source.addEventListener("position", (event) => {
      if (event.data !== document.body.dataset.position) {
        document.body.dataset.position = event.data;
        refresh().catch(() => {});
      }
    });
  }

  window.orchestratorUI = { get dirty() { return dirty; } };
  live();
})();
