// The library page: plain DOM, no framework, no network but this server's /api/.
// Every string that comes from a model file (names, titles, metadata, paths) is put into the page
// with textContent or as an attribute value through the DOM, never parsed as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);

/** el("td", {class: "num"}, "text", child, ...): an element; strings become text nodes. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : 1) : String(n)) + " " + units[i];
}

function count(n) {
  if (!n) return "";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " B";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(n);
}

async function api(path) {
  const r = await fetch(path, {headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function copyButton(text) {
  return el("button", {class: "copy", type: "button", title: "copy", onclick: async (ev) => {
    ev.stopPropagation();
    try { await navigator.clipboard.writeText(text); ev.target.textContent = "copied"; }
    catch (e) { ev.target.textContent = "select it"; }
  }}, "copy");
}

// --- actions (only with `library serve --allow-actions`: the page then carries a token) -----

const actionToken = document.querySelector('meta[name="ckptkit-token"]')?.content || "";

const actionWords = {
  prune: "write a pruned copy (no EMA, no training extras) beside it",
  split: "write its parts (diffusion model, text encoders, VAE) into a new folder beside it",
  convert: "write a .safetensors copy (the tensors only) beside it",
};

function actionButtons(m, d) {
  if (!actionToken || d.is_folder || m.error) return null;
  const result = el("p", {id: "action-result"});
  const dangerous = m.scan_verdict === "dangerous";
  const button = (action) => el("button", {type: "button", class: "action", "data-action": action, onclick: async () => {
    if (!window.confirm(action + " " + m.name + ": " + actionWords[action] + "? The file itself is not changed.")) return;
    const body = {id: m.id};
    if (dangerous) {
      if (!window.confirm("The scan found code that would run if this file were loaded. Only its tensors are read; nothing in it runs. Go on?")) return;
      body.allow_dangerous = true;
    }
    result.textContent = action + "…";
    try {
      const r = await fetch("/api/actions/" + action, {method: "POST", body: JSON.stringify(body),
        headers: {"Content-Type": "application/json", "X-Ckptkit-Token": actionToken}});
      const j = await r.json();
      result.textContent = r.ok ? "Wrote " + j.written.join(", ") + ". " + j.next : "Not done: " + j.error;
    } catch (e) { result.textContent = "Not done: " + e.message; }
  }}, action);
  const buttons = ["prune", "split"];
  if (m.format !== "safetensors") buttons.push("convert");
  return [el("h3", {}, "Actions"), el("p", {id: "actions"}, ...buttons.map(button)), result];
}

// --- the table -------------------------------------------------------------------------------

const state = {sort: "name", order: "asc"};

function query() {
  const p = new URLSearchParams();
  if ($("#q").value) p.set("q", $("#q").value);
  if ($("#kind").value) p.set("kind", $("#kind").value);
  if ($("#family").value) p.set("family", $("#family").value);
  if ($("#unsafe").checked) p.set("unsafe", "1");
  if ($("#defects").checked) p.set("defects", "1");
  p.set("sort", state.sort);
  p.set("order", state.order);
  return p.toString();
}

let loadSeq = 0;
async function loadModels() {
  const seq = ++loadSeq;
  $("#models").setAttribute("aria-busy", "true");  // rows on show are the last answer's
  const data = await api("/api/models?" + query());
  if (seq !== loadSeq) return;  // a newer filter is on its way
  const body = $("#models tbody");
  body.replaceChildren();
  for (const m of data.models) {
    const name = el("td", {}, el("div", {class: "name"}, m.title || m.name),
                    el("div", {class: "path"}, m.path));
    const verdict = m.error ? el("td", {class: "error"}, "unreadable")
                            : el("td", {class: "verdict-" + (m.scan_verdict || "unknown")}, m.scan_verdict || "?");
    const tr = el("tr", {"data-id": String(m.id)}, name, el("td", {}, m.kind),
                  el("td", {}, m.kind === "LoRA" && m.lora_base ? "LoRA for " + m.lora_base
                               : m.architecture + (m.variant && m.variant !== "standard" ? " (" + m.variant + ")" : "")),
                  el("td", {}, m.format), el("td", {class: "num"}, bytes(m.size)),
                  el("td", {class: "num"}, count(m.parameters)), verdict,
                  el("td", {class: "num"}, m.defects ? String(m.defects) : ""));
    tr.addEventListener("click", () => { location.hash = "#/model/" + m.id; });
    body.append(tr);
  }
  $("#count").textContent = data.count + " of " + data.total + " files";
  $("#models").setAttribute("aria-busy", "false");
  for (const th of document.querySelectorAll("#models th")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && state.order === "asc");
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.order === "desc");
  }
}

// --- one model -------------------------------------------------------------------------------

const ROLE_COLORS = {diffusion_model: "#4c78a8", text_encoder: "#f58518", vae: "#54a24b",
                     ema: "#b279a2", training_extra: "#9d755d", lora: "#e45756"};

function componentDiagram(components) {
  const total = components.reduce((s, c) => s + c.bytes, 0) || 1;
  const W = 720, H = 46 + 0;
  const g = svg("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                        "aria-label": "components by size"});
  let x = 0;
  for (const c of components) {
    const w = Math.max(2, (c.bytes / total) * W);
    const label = (c.part && c.part !== "none" ? c.part : c.role) + " " + bytes(c.bytes);
    const r = svg("rect", {x: x, y: 0, width: w, height: 24,
                           fill: ROLE_COLORS[c.role] || "#bab0ac", stroke: "#fff"});
    r.append(svg("title", {}, label + (c.prefix ? " at " + c.prefix : "")));
    g.append(r);
    if (w > 60) g.append(svg("text", {x: x + 4, y: 40}, label));
    x += w;
  }
  return g;
}

function scanInWords(d) {
  const v = d.model.scan_verdict;
  const box = el("div", {});
  const text = {safe: "Safe to load: the file holds only tensors; loading it runs no code.",
                suspicious: "Suspicious: loading it with torch.load could import modules that are not part of the tensor format.",
                dangerous: "Dangerous: loading it with torch.load (ComfyUI, A1111, diffusers) would run code. Do not load it; convert it with ckptkit only if you trust its source.",
                unknown: "Not checked: run `ckptkit scan` on it."}[v] || "";
  box.append(el("p", {class: "verdict-" + (v || "unknown")}, text));
  if (d.scan_summary) box.append(el("p", {}, d.scan_summary));
  const scan = d.inspect && d.inspect.scan;
  if (scan && scan.globals) {
    const bad = scan.globals.filter((g) => g.category !== "allowed");
    if (bad.length) {
      const ul = el("ul", {});
      for (const g of bad) ul.append(el("li", {}, g.module + "." + g.name + " (" + g.category + "): " + (g.reason || "")));
      box.append(ul);
    }
  }
  return box;
}

async function showModel(id) {
  const view = $("#detail-view");
  view.replaceChildren(el("p", {}, "loading…"));
  let d;
  try { d = await api("/api/models/" + encodeURIComponent(id)); }
  catch (e) { view.replaceChildren(el("p", {class: "error"}, "No such model.")); return; }
  const m = d.model;
  const facts = el("table", {class: "facts"});
  const row = (k, v) => { if (v !== "" && v !== null && v !== undefined) facts.append(el("tr", {}, el("th", {}, k), el("td", {}, v))); };
  row("File", m.path);
  row("Kind", m.kind);
  row("Architecture", m.architecture + (m.variant ? " (" + m.variant + ")" : "") + (d.confidence ? ", from " + d.confidence : ""));
  row("Format", m.format);
  row("Size", bytes(m.size));
  row("Parameters", count(m.parameters));
  row("Tensors", d.tensors ? String(d.tensors) : "");
  row("dtypes", Object.entries(d.dtypes || {}).map(([k, n]) => k + " ×" + n).join(", "));
  row("LoRA base", m.lora_base);
  row("LoRA rank", d.lora_rank ? String(d.lora_rank) : "");
  if (m.error) facts.append(el("tr", {}, el("th", {}, "Error"), el("td", {class: "error"}, m.error)));
  const parts = [el("p", {}, el("a", {href: "#/"}, "← all models")),
                 el("h2", {id: "detail-title"}, m.title || m.name), facts];
  if (m.trigger_words) {
    const words = el("p", {id: "trigger-words"});
    for (const w of m.trigger_words.split(",").map((s) => s.trim()).filter(Boolean))
      words.append(el("span", {class: "chip"}, w));
    words.append(copyButton(m.trigger_words));
    parts.push(el("h3", {}, "Trigger words"), words);
  }
  parts.push(el("h3", {}, "Safety"), scanInWords(d));
  const actions = actionButtons(m, d);
  if (actions) parts.push(...actions);
  if (d.components.length) {
    const t = el("table", {}, el("tr", {}, el("th", {}, "Component"), el("th", {}, "Prefix"),
                                  el("th", {class: "num"}, "Size"), el("th", {}, "Detail"),
                                  el("th", {}, "Shared with")));
    for (const c of d.components)
      t.append(el("tr", {}, el("td", {}, c.role + (c.part && c.part !== "none" ? " · " + c.part : "")),
                   el("td", {}, el("code", {}, c.prefix)), el("td", {class: "num"}, bytes(c.bytes)),
                   el("td", {}, c.detail),
                   el("td", {}, c.shared_with ? c.shared_with + " other file(s)" : "")));
    parts.push(el("h3", {}, "Components"), componentDiagram(d.components), t);
  }
  const defects = d.defect_list || [];
  parts.push(el("h3", {}, "Defects"));
  if (!defects.length) parts.push(el("p", {}, "None found."));
  else {
    const ul = el("ul", {});
    for (const x of defects) ul.append(el("li", {class: "defect-" + x.severity}, x.severity + ": " + x.message + " (" + x.code + ")"));
    parts.push(ul);
  }
  const hashes = el("table", {class: "facts", id: "hashes"});
  for (const [k, v] of Object.entries(d.hashes)) {
    if (k === "error") continue;
    hashes.append(el("tr", {}, el("th", {}, k), el("td", {}, v ? el("span", {class: "hash"}, v) : "—", v ? copyButton(v) : null)));
  }
  parts.push(el("h3", {}, "Hashes"), hashes);
  if (d.hashes.error) parts.push(el("p", {class: "error"}, d.hashes.error));
  const meta = Object.entries(d.metadata || {});
  if (meta.length) {
    const t = el("table", {class: "facts", id: "metadata"});
    for (const [k, v] of meta) t.append(el("tr", {}, el("th", {}, k), el("td", {}, el("span", {class: "meta-value"}, v))));
    parts.push(el("h3", {}, "Metadata"), t);
  }
  if (d.evidence && d.evidence.length) {
    const ul = el("ul", {});
    for (const e of d.evidence) ul.append(el("li", {}, e));
    parts.push(el("h3", {}, "Why this architecture"), ul);
  }
  parts.push(el("p", {}, el("a", {href: "/api/models/" + m.id}, "this model as JSON")));
  view.replaceChildren(...parts);
}

// --- duplicates and disk use -----------------------------------------------------------------

async function showDupes() {
  const view = $("#dupes-view");
  const d = await api("/api/dupes");
  const parts = [el("h2", {}, "Duplicates")];
  const group = (title, g) => {
    const ul = el("ul", {});
    for (const m of g.members) ul.append(el("li", {}, el("a", {href: "#/model/" + m.id}, m.path)));
    return el("div", {class: "group"}, el("strong", {}, title), ul);
  };
  parts.push(el("h3", {}, "Identical files: " + bytes(d.files_saved_bytes) + " to save"));
  if (!d.files.length) parts.push(el("p", {}, "None."));
  for (const g of d.files) parts.push(group(g.members.length + " copies of " + bytes(g.bytes) + ", sha256 " + g.sha256.slice(0, 16) + "…", g));
  parts.push(el("h3", {}, "Identical components: " + bytes(d.components_saved_bytes) + " that split would save"));
  if (!d.fingerprints_indexed) parts.push(el("p", {}, "Components are compared after `ckptkit library index --deep`."));
  else if (!d.components.length) parts.push(el("p", {}, "None."));
  for (const g of d.components) parts.push(group(g.what + ", " + bytes(g.bytes) + " in " + g.members.length + " files", g));
  view.replaceChildren(...parts);
}

function barChart(rows, id) {
  const max = Math.max(1, ...rows.map((r) => r.bytes));
  const W = 720, bar = 22, label = 170;
  const g = svg("svg", {id: id, width: W, height: rows.length * (bar + 6) + 4, role: "img"});
  rows.forEach((r, i) => {
    const y = i * (bar + 6);
    g.append(svg("text", {x: 0, y: y + 15}, r.name));
    const w = Math.max(1, (r.bytes / max) * (W - label - 170));
    const rect = svg("rect", {x: label, y: y, width: w, height: bar, fill: "#4c78a8"});
    rect.append(svg("title", {}, r.name + ": " + bytes(r.bytes)));
    g.append(rect);
    g.append(svg("text", {x: label + w + 6, y: y + 15}, bytes(r.bytes) + " in " + r.files + " file" + (r.files === 1 ? "" : "s")));
  });
  return g;
}

async function showStats() {
  const s = await api("/api/stats");
  $("#stats-view").replaceChildren(
      el("h2", {}, "Disk use"),
      el("p", {}, s.files + " files, " + bytes(s.bytes) + "; " + s.unsafe + " not safe to load, " +
                  s.with_defects + " with defects, " + s.errors + " unreadable."),
      el("h3", {}, "By family"), barChart(s.by_family, "chart-family"),
      el("h3", {}, "By kind"), barChart(s.by_kind, "chart-kind"));
}

// --- routing ---------------------------------------------------------------------------------

async function route() {
  const h = location.hash || "#/";
  const views = {models: $("#models-view"), detail: $("#detail-view"), dupes: $("#dupes-view"), stats: $("#stats-view")};
  let current = "models";
  const m = /^#\/model\/(\d+)$/.exec(h);
  if (m) current = "detail";
  else if (h === "#/dupes") current = "dupes";
  else if (h === "#/stats") current = "stats";
  for (const [k, v] of Object.entries(views)) v.hidden = k !== current;
  for (const k of ["models", "dupes", "stats"]) $("#nav-" + k).classList.toggle("current", k === current);
  if (current === "detail") await showModel(m[1]);
  else if (current === "dupes") await showDupes();
  else if (current === "stats") await showStats();
  else await loadModels();
}

async function init() {
  for (const id of ["#kind", "#family", "#unsafe", "#defects"]) $(id).addEventListener("change", loadModels);
  let timer = 0;
  $("#q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(loadModels, 150); });
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadModels(); });
  for (const th of document.querySelectorAll("#models th")) {
    th.addEventListener("click", () => {
      if (state.sort === th.dataset.sort) state.order = state.order === "asc" ? "desc" : "asc";
      else { state.sort = th.dataset.sort; state.order = "asc"; }
      loadModels();
    });
  }
  window.addEventListener("hashchange", route);
  try {
    const s = await api("/api/stats");
    $("#summary").textContent = s.files + " files, " + bytes(s.bytes);
    for (const f of s.by_family) $("#family").append(el("option", {value: f.name}, f.name));
  } catch (e) { /* the table says what is wrong */ }
  await route();
  document.body.dataset.ready = "1";
}

init();
