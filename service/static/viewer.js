// atencion attention viewer: plain JS, no libraries, no network beyond this server (GET /info, POST /attention).
// Decodes the payload of service/inspection.py (encodings in service/encoding.py) and draws it on canvases.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { payload: null, maps: [], selected: null, rolloutRow: 0 };

// ---- decoding (mirrors service/encoding.py) ---------------------------------------------------------------
function bytesOf(b64) {
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function decodeBits(block) {
  const count = block.shape.reduce((a, b) => a * b, 1);
  const packed = bytesOf(block.data);
  const repeats = block.heads || 1; // a mask every head shares is sent once
  const out = new Uint8Array(count * repeats);
  for (let i = 0; i < count; i++) out[i] = (packed[i >> 3] >> (7 - (i & 7))) & 1;
  for (let r = 1; r < repeats; r++) out.copyWithin(r * count, 0, count);
  return out;
}

function decodeValues(block, mask) {
  const count = block.shape.reduce((a, b) => a * b, 1);
  const width = block.shape[block.shape.length - 1];
  const raw = bytesOf(block.data);
  const scales = new Float32Array(bytesOf(block.row_scales).buffer); // little-endian float32 row maxima
  const out = new Float32Array(count);
  if (block.encoding === "dense-u8") {
    for (let i = 0; i < count; i++) out[i] = (raw[i] / 255) * scales[Math.floor(i / width)];
  } else if (block.encoding === "layout-u8") {
    let j = 0; // the layout mask is the index: its true cells in row-major order
    for (let i = 0; i < count; i++) if (mask[i]) out[i] = (raw[j++] / 255) * scales[Math.floor(i / width)];
  } else {
    throw new Error(`unknown encoding ${block.encoding}`);
  }
  return out;
}

// ---- colours: a few viridis stops, linearly interpolated ---------------------------------------------------
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const FORBIDDEN = [200, 200, 200]; // structurally zero: masked (inside a computed block, or a dense layer's mask)
const SKIPPED = [236, 236, 236]; // structurally zero and never computed: outside every block the kernel computes
function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
}
const PALETTE = Array.from({ length: 256 }, (_, i) => colour(i / 255)); // one lookup per cell, not a blend

// ---- requests ------------------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = null; }
  if (!response.ok) {
    let message = body && (body.error || body.detail) ? (body.error || body.detail) : text || response.statusText;
    if (typeof message !== "string") message = JSON.stringify(message);
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

async function loadModels() {
  try {
    const info = await answer(await fetch("/info", { headers: headers() }));
    const models = Array.isArray(info.models) ? info.models : Object.values(info.models || {});
    const select = $("model");
    const previous = select.value;
    select.replaceChildren();
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${t(`kind.${m.kind}`)}, ${m.pattern || "dense"})`;
      select.append(option);
    }
    if (previous) select.value = previous;
    document.body.dataset.models = String(models.length);
    setStatus(models.length ? "" : t("status.no_model"), !models.length);
  } catch (error) {
    setStatus(t("status.no_models_listed", { error: error.message }), true);
  }
}

function indices(text) {
  const parts = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (!parts.length) return null;
  const values = parts.map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < 0)) throw new Error(t("status.bad_indices", { text }));
  return values;
}

async function analyse(event) {
  if (event) event.preventDefault();
  delete document.body.dataset.ready;
  const button = $("run");
  button.disabled = true;
  setStatus(t("status.analysing"));
  try {
    const parameters = { layers: indices($("layers").value), heads: indices($("heads").value) };
    const target = $("target").value.trim();
    if (target !== "") parameters.target = Number(target);
    const body = { inputs: $("text").value, model: $("model").value || undefined, parameters };
    const started = performance.now();
    const payload = await answer(await fetch("/attention", { method: "POST", headers: headers(), body: JSON.stringify(body) }));
    if (payload.kind === "translator") {
      renderTranslation(payload); // cross.js
    } else {
      $("cross").hidden = true;
      for (const id of ["overview", "attribution", "statistics"]) $(id).hidden = false;
      render(payload);
    }
    setStatus(t("status.done", { tokens: payload.n_tokens, layers: payload.layers.length, heads: payload.heads.length,
      ms: Math.round(performance.now() - started) }));
    document.body.dataset.ready = "true";
  } catch (error) {
    setStatus(error.message, true);
    document.body.dataset.ready = "error";
  } finally {
    button.disabled = false;
  }
}

// ---- the grid ------------------------------------------------------------------------------------------------
function render(payload) {
  const n = payload.n_tokens;
  const layouts = new Map(payload.layouts.map((l) => [l.layer, l]));
  state.payload = payload;
  state.maps = [];
  for (const block of payload.attentions) {
    const layout = layouts.get(block.layer);
    const mask = decodeBits(layout.mask);
    const computed = layout.computed ? decodeBits(layout.computed) : null;
    const values = decodeValues(block, mask);
    payload.heads.forEach((head, h) => {
      const cells = n * n;
      state.maps.push({
        layer: block.layer, head, layout, n,
        values: values.subarray(h * cells, (h + 1) * cells),
        mask: mask.subarray(h * cells, (h + 1) * cells),
        computed: computed ? computed.subarray(h * cells, (h + 1) * cells) : null,
      });
    });
  }
  $("results").hidden = false;
  drawSummary();
  drawGrid();
  state.rolloutRow = payload.rollout.row;
  drawAttribution();
  drawStatistics();
  const first = state.maps[0];
  openDetail(first.layer, first.head);
}

function drawSummary() {
  const payload = state.payload;
  $("summary").textContent = `${t(`kind.${payload.kind}`)} · ${t("summary.pattern", { pattern: payload.pattern })} · ` +
    payload.layouts.map((l) => `L${l.layer}: ${l.pattern}` +
      (l.block_size ? ` (${t("summary.blocks_of", { size: l.block_size })})` : "") +
      `, ${t("summary.cells_allowed", { share: (100 * l.density).toFixed(0) })}` +
      (l.sparse ? `, ${t("summary.blocks_computed", { share: (100 * l.block_density).toFixed(0) })}` : "")).join(" · ");
}

function paint(canvas, map, options = {}) {
  const { n, values, mask, computed } = map;
  canvas.width = n;
  canvas.height = n;
  const context = canvas.getContext("2d");
  const image = context.createImageData(n, n);
  const top = options.absolute ? 1 : headMaximum(map);
  const showLayout = options.layout ?? true;
  const pixels = image.data;
  for (let i = 0; i < n * n; i++) {
    let rgb = PALETTE[Math.min(255, Math.round((values[i] / top) * 255))];
    if (showLayout && mask && !mask[i]) rgb = computed && !computed[i] ? SKIPPED : FORBIDDEN;
    pixels[4 * i] = rgb[0];
    pixels[4 * i + 1] = rgb[1];
    pixels[4 * i + 2] = rgb[2];
    pixels[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

// The per-head scale ignores rows with a single allowed key (a causal model's first row is always 1).
function headMaximum(map) {
  const { n, values, mask } = map;
  let top = 0;
  for (let q = 0; q < n; q++) {
    let keys = 0, best = 0;
    for (let k = 0; k < n; k++) {
      const i = q * n + k;
      if (!mask || mask[i]) keys++;
      if (values[i] > best) best = values[i];
    }
    if (keys > 1 && best > top) top = best;
  }
  return top > 0 ? top : 1;
}

function label(token) {
  if (token.text && token.text.trim()) return token.text;
  return token.special ? token.token : shown(token.text);
}

// whitespace made visible where nothing else is: ↵ per line break, ⇥ per tab, ␣ per space
function shown(text) {
  if (text && text.trim()) return text;
  return [...(text || " ")].map((c) => ({ "\n": "↵", "\t": "⇥", "\r": "" })[c] ?? "␣").join("") || "␣";
}

function drawGrid() {
  const grid = $("grid");
  const payload = state.payload;
  grid.replaceChildren();
  grid.style.gridTemplateColumns = `1.2rem repeat(${payload.heads.length}, auto)`;
  grid.append(document.createElement("span"));
  for (const head of payload.heads) {
    const heading = document.createElement("span");
    heading.className = "head-label";
    heading.textContent = t("grid.head", { head });
    grid.append(heading);
  }
  const absolute = $("scale").value === "absolute";
  const layout = $("show-layout").checked;
  for (const layer of payload.layers) {
    const heading = document.createElement("span");
    heading.className = "row-label";
    heading.textContent = t("grid.layer", { layer });
    grid.append(heading);
    for (const map of state.maps.filter((m) => m.layer === layer)) {
      const canvas = document.createElement("canvas");
      canvas.className = "thumb";
      canvas.dataset.layer = map.layer;
      canvas.dataset.head = map.head;
      canvas.title = t("grid.cell", { layer: map.layer, head: map.head });
      paint(canvas, map, { absolute, layout });
      canvas.tabIndex = 0; // reachable with the keyboard: Enter opens the detail
      canvas.addEventListener("click", () => openDetail(map.layer, map.head));
      canvas.addEventListener("keydown", (event) => { if (event.key === "Enter") openDetail(map.layer, map.head); });
      grid.append(canvas);
    }
  }
}

// ---- the detail: large heatmap with labels and hover, and the arc view ---------------------------------------
const MARGIN = 90; // room for token labels on the large heatmap

function openDetail(layer, head) {
  const map = state.maps.find((m) => m.layer === layer && m.head === head);
  if (!map) return;
  state.selected = map;
  for (const thumb of document.querySelectorAll("canvas.thumb")) {
    thumb.classList.toggle("selected", Number(thumb.dataset.layer) === layer && Number(thumb.dataset.head) === head);
  }
  for (const row of document.querySelectorAll("#stats tbody tr")) {
    row.classList.toggle("selected", Number(row.dataset.layer) === layer && Number(row.dataset.head) === head);
  }
  const section = $("detail");
  section.hidden = false;
  section.dataset.layer = layer;
  section.dataset.head = head;
  const layout = map.layout;
  $("detail-title").textContent = `${t("detail.heading", { layer, head })} · ${layout.pattern}` +
    (layout.block_size ? ` · ${t("summary.blocks_of", { size: layout.block_size })}` : "") +
    (layout.causal ? ` · ${t("detail.causal")}` : "");
  drawDetail();
  drawArcs();
}

function drawDetail() {
  const map = state.selected;
  const tokens = state.payload.tokens;
  const n = map.n;
  const cell = Math.max(2, Math.min(24, Math.floor(560 / n)));
  const canvas = $("detail-canvas");
  const size = MARGIN + n * cell;
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d");
  context.fillStyle = "white";
  context.fillRect(0, 0, size, size);
  const heat = document.createElement("canvas");
  paint(heat, map, { absolute: $("scale").value === "absolute", layout: $("show-layout").checked });
  context.imageSmoothingEnabled = false;
  context.drawImage(heat, MARGIN, MARGIN, n * cell, n * cell);
  const block = map.layout.block_size;
  if ($("show-layout").checked && block && block < n && !map.layout.reordered) { // the kernel's block grid
    context.strokeStyle = "rgba(255,255,255,0.7)";
    context.lineWidth = 1;
    for (let b = block; b < n; b += block) {
      context.beginPath();
      context.moveTo(MARGIN + b * cell, MARGIN); context.lineTo(MARGIN + b * cell, MARGIN + n * cell);
      context.moveTo(MARGIN, MARGIN + b * cell); context.lineTo(MARGIN + n * cell, MARGIN + b * cell);
      context.stroke();
    }
  }
  if (cell >= 7) {
    context.fillStyle = "#1d2430";
    context.font = `${Math.min(12, cell)}px system-ui, "DejaVu Sans", sans-serif`;
    context.textBaseline = "middle";
    tokens.forEach((token, i) => {
      const name = clip(label(token));
      context.textAlign = "right";
      context.fillText(name, MARGIN - 4, MARGIN + (i + 0.5) * cell);
      context.save();
      context.translate(MARGIN + (i + 0.5) * cell, MARGIN - 4);
      context.rotate(-Math.PI / 2);
      context.textAlign = "left";
      context.fillText(name, 0, 0);
      context.restore();
    });
  }
  context.fillStyle = "#5b6575";
  context.font = "11px system-ui, sans-serif";
  context.textAlign = "left";
  context.fillText(`L${map.layer} H${map.head}  ${t("detail.axes")}`, 4, 12);
}

function clip(text) {
  return text.length > 12 ? `${text.slice(0, 11)}…` : text;
}

function hover(event) {
  const map = state.selected;
  if (!map) return;
  const canvas = $("detail-canvas");
  const rect = canvas.getBoundingClientRect();
  const ratio = canvas.width / rect.width;
  const cell = (canvas.width - MARGIN) / map.n;
  const x = (event.clientX - rect.left) * ratio - MARGIN;
  const y = (event.clientY - rect.top) * ratio - MARGIN;
  const tip = $("hover");
  if (x < 0 || y < 0 || x >= map.n * cell || y >= map.n * cell) { tip.hidden = true; return; }
  const q = Math.floor(y / cell), k = Math.floor(x / cell);
  const tokens = state.payload.tokens;
  const i = q * map.n + k;
  const note = map.mask[i] ? map.values[i].toFixed(3)
    : map.computed && !map.computed[i] ? t("hover.skipped") : t("hover.masked");
  tip.textContent = `«${label(tokens[q])}» → «${label(tokens[k])}»: ${note}`;
  tip.style.left = `${event.clientX - rect.left + 12}px`;
  tip.style.top = `${event.clientY - rect.top + 12}px`;
  tip.hidden = false;
}

function drawArcs() {
  const map = state.selected;
  const tokens = state.payload.tokens;
  const n = map.n;
  const k = Math.max(1, Number($("topk").value) || 3);
  const threshold = Math.max(0, Number($("threshold").value) || 0);
  const svg = $("arcs");
  const NS = "http://www.w3.org/2000/svg";
  const row = Math.max(8, Math.min(18, Math.floor(1800 / n))), width = 320, left = 110, right = width - 110;
  svg.style.fontSize = `${Math.max(7, row - 6)}px`;
  svg.setAttribute("width", width);
  svg.setAttribute("height", n * row + 10);
  svg.replaceChildren();
  svg.classList.remove("focused");
  for (let q = 0; q < n; q++) { // top-k keys of each query row above the threshold: at most n·k lines
    const keys = [];
    for (let j = 0; j < n; j++) if (map.mask[q * n + j] && map.values[q * n + j] >= threshold && map.values[q * n + j] > 0) keys.push(j);
    keys.sort((a, b) => map.values[q * n + b] - map.values[q * n + a]);
    for (const j of keys.slice(0, k)) {
      const line = document.createElementNS(NS, "line");
      line.setAttribute("x1", left); line.setAttribute("y1", (q + 0.75) * row);
      line.setAttribute("x2", right); line.setAttribute("y2", (j + 0.75) * row);
      line.setAttribute("stroke-width", 1 + 3 * map.values[q * n + j]);
      line.setAttribute("stroke-opacity", Math.max(0.15, map.values[q * n + j]).toFixed(3));
      line.dataset.query = q;
      line.dataset.key = j;
      svg.append(line);
    }
  }
  tokens.forEach((token, i) => {
    for (const side of ["query", "key"]) {
      const text = document.createElementNS(NS, "text");
      text.setAttribute("x", side === "query" ? left - 6 : right + 6);
      text.setAttribute("y", (i + 1) * row);
      text.setAttribute("text-anchor", side === "query" ? "end" : "start");
      if (token.special) text.setAttribute("class", "special");
      text.textContent = clip(label(token));
      text.addEventListener("mouseenter", () => focusArcs(side, i));
      text.addEventListener("mouseleave", () => svg.classList.remove("focused"));
      svg.append(text);
    }
  });
}

function focusArcs(side, index) {
  const svg = $("arcs");
  svg.classList.add("focused");
  for (const line of svg.querySelectorAll("line")) line.classList.toggle("focus", Number(line.dataset[side]) === index);
}

function download() {
  const map = state.selected;
  const link = document.createElement("a");
  link.href = $("detail-canvas").toDataURL("image/png");
  link.download = `attention-L${map.layer}-H${map.head}.png`;
  link.click();
}

// ---- rollout, gradient × attention, statistics -----------------------------------------------------------------
function strip(container, weights, chosen, onClick) {
  const tokens = state.payload.tokens;
  const top = Math.max(1e-9, ...weights);
  container.replaceChildren();
  tokens.forEach((token, i) => {
    const span = document.createElement("span");
    span.textContent = label(token);
    span.title = `${i}: ${weights[i].toFixed(4)}`;
    span.style.background = `rgba(47, 111, 219, ${(weights[i] / top).toFixed(3)})`;
    if (weights[i] / top > 0.6) span.style.color = "white";
    if (token.special) span.classList.add("special");
    if (i === chosen) span.classList.add("chosen");
    span.addEventListener("click", () => onClick(i));
    container.append(span);
  });
}

function drawAttribution() {
  const payload = state.payload;
  const n = payload.n_tokens;
  const rolled = decodeValues(payload.rollout.matrix);
  const row = state.rolloutRow;
  $("rollout-row").textContent = t("rollout.row", { token: label(payload.tokens[row]), row });
  strip($("rollout"), Array.from(rolled.subarray(row * n, (row + 1) * n)), row, (i) => { state.rolloutRow = i; drawAttribution(); });
  const gradient = payload.gradient;
  const maps = $("gradient-maps");
  maps.replaceChildren();
  if (!gradient) { $("gradient-target").textContent = t("gradient.none"); $("gradient").replaceChildren(); return; }
  const target = gradient.target;
  const what = t(target.explains === "next token" ? "gradient.next" : (target.masked_input ? "gradient.masked_hidden" : "gradient.masked"));
  $("gradient-target").textContent = t("gradient.target", {
    position: target.position, what, token: shown(target.text ?? target.token), logp: target.log_prob.toFixed(2),
  });
  if (gradient.error) { $("gradient").textContent = gradient.error; return; }
  strip($("gradient"), gradient.relevance.map((v) => Math.max(0, v)), target.position, (i) => { $("target").value = i; analyse(); });
  for (const block of gradient.maps) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    paint(canvas, { n, values: decodeValues(block, block.mask ? decodeBits(block.mask) : null), mask: null });
    const caption = document.createElement("figcaption");
    caption.textContent = t("grid.layer", { layer: block.layer });
    figure.append(canvas, caption);
    maps.append(figure);
  }
}

const COLUMNS = ["entropy", "max_entropy", "normalised_entropy", "distance", "self", "previous", "next", "special", "punctuation", "allowed_keys"];

function drawStatistics() {
  const body = $("stats").querySelector("tbody");
  body.replaceChildren();
  for (const s of state.payload.statistics) {
    const row = document.createElement("tr");
    row.dataset.layer = s.layer;
    row.dataset.head = s.head;
    const cells = [s.layer, s.head, ...COLUMNS.map((c) => (c === "allowed_keys" || c === "distance" ? s[c].toFixed(1) : s[c].toFixed(2)))];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      row.append(td);
    }
    row.addEventListener("click", () => openDetail(s.layer, s.head));
    body.append(row);
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------------
function redraw() {
  if (!state.payload) return;
  drawGrid();
  if (state.selected) openDetail(state.selected.layer, state.selected.head);
}

// the language switch (i18n.js): rewrite what this file wrote
document.addEventListener("i18n:change", () => {
  loadModels();
  if (typeof cross !== "undefined" && cross.payload && !$("cross").hidden) renderTranslation(cross.payload);
  if (!state.payload) return;
  drawSummary();
  redraw();
  drawAttribution();
});

$("query").addEventListener("submit", analyse);
$("api-key").addEventListener("change", loadModels);
$("scale").addEventListener("change", redraw);
$("show-layout").addEventListener("change", redraw);
$("topk").addEventListener("input", () => state.selected && drawArcs());
$("threshold").addEventListener("input", () => state.selected && drawArcs());
$("download").addEventListener("click", download);
$("detail-canvas").addEventListener("mousemove", hover);
$("detail-canvas").addEventListener("mouseleave", () => { $("hover").hidden = true; });
loadModels();
