// atencion viewer, translators: cross-attention maps (service/translation_inspection.py), source tokens on the
// horizontal axis and target tokens on the vertical one. Uses decodeValues, PALETTE and $ from viewer.js.
"use strict";

const cross = { payload: null, maps: [] };

function paintCross(canvas, map, T, S) {
  canvas.width = S;
  canvas.height = T;
  const context = canvas.getContext("2d");
  const image = context.createImageData(S, T);
  let top = 0;
  for (const v of map.values) top = Math.max(top, v);
  top = top > 0 ? top : 1;
  for (let i = 0; i < T * S; i++) {
    const rgb = PALETTE[Math.min(255, Math.round((map.values[i] / top) * 255))];
    image.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

function renderTranslation(payload) {
  cross.payload = payload;
  cross.maps = [];
  const T = payload.n_tokens, S = payload.n_source_tokens;
  for (const block of payload.cross_attentions) {
    const values = decodeValues(block);
    payload.heads.forEach((head, h) => {
      cross.maps.push({ layer: block.layer, head, values: values.subarray(h * T * S, (h + 1) * T * S) });
    });
  }
  $("results").hidden = false;
  for (const id of ["overview", "detail", "attribution", "statistics"]) $(id).hidden = true;
  $("cross").hidden = false;
  $("cross-summary").textContent = `${payload.text} → ${payload.translation}`;
  const grid = $("cross-grid");
  grid.replaceChildren();
  for (const map of cross.maps) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.className = "cross-thumb";
    canvas.title = t("grid.cell", { layer: map.layer, head: map.head });
    paintCross(canvas, map, T, S);
    const pixel = Math.max(3, Math.round(160 / Math.max(T, S))); // the same scale on both axes
    canvas.style.width = `${pixel * S}px`;
    canvas.style.height = `${pixel * T}px`;
    canvas.addEventListener("click", () => openCross(map));
    const caption = document.createElement("figcaption");
    caption.textContent = `L${map.layer} H${map.head}`;
    figure.append(canvas, caption);
    grid.append(figure);
  }
  drawRelevance($("cross-rollout"), payload.source_tokens, payload.rollout.source);
  const gradient = payload.gradient;
  $("cross-gradient-target").textContent = gradient
    ? t("cross.gradient_target", { position: gradient.target.position, token: shown(gradient.target.text ?? gradient.target.token) })
    : t("cross.off");
  drawRelevance($("cross-gradient"), payload.source_tokens, gradient ? gradient.source_relevance : null);
  openCross(cross.maps[0]);
}

function drawRelevance(box, tokens, values) {
  box.replaceChildren();
  if (!values) return;
  const top = Math.max(...values, 1e-9);
  tokens.forEach((token, i) => {
    const span = document.createElement("span");
    span.textContent = token.text;
    span.title = values[i].toFixed(4);
    const rgb = PALETTE[Math.min(255, Math.round((values[i] / top) * 255))];
    span.style.background = `rgb(${rgb.join(",")})`;
    span.style.color = values[i] / top > 0.6 ? "black" : "white";
    box.append(span);
  });
}

// The detail: one cell per (target, source) pair, the target tokens down the left, the source tokens on top.
function openCross(map) {
  const payload = cross.payload;
  const T = payload.n_tokens, S = payload.n_source_tokens;
  const canvas = $("cross-canvas");
  const cell = Math.max(14, Math.min(32, Math.floor(720 / Math.max(T, S))));
  const left = 110, topMargin = 90;
  canvas.width = left + S * cell;
  canvas.height = topMargin + T * cell;
  const context = canvas.getContext("2d");
  context.fillStyle = "white";
  context.fillRect(0, 0, canvas.width, canvas.height);
  let top = 0;
  for (const v of map.values) top = Math.max(top, v);
  top = top > 0 ? top : 1;
  for (let t = 0; t < T; t++) {
    for (let s = 0; s < S; s++) {
      const rgb = PALETTE[Math.min(255, Math.round((map.values[t * S + s] / top) * 255))];
      context.fillStyle = `rgb(${rgb.join(",")})`;
      context.fillRect(left + s * cell, topMargin + t * cell, cell, cell);
    }
  }
  context.fillStyle = "#1d2430";
  context.font = "12px system-ui, sans-serif";
  context.textAlign = "right";
  context.textBaseline = "middle";
  payload.tokens.forEach((token, t) => context.fillText(token.text.trim(), left - 6, topMargin + t * cell + cell / 2));
  payload.source_tokens.forEach((token, s) => {
    context.save();
    context.translate(left + s * cell + cell / 2, topMargin - 6);
    context.rotate(-Math.PI / 3);
    context.textAlign = "left";
    context.fillText(token.text.trim(), 0, 0);
    context.restore();
  });
  $("cross-title").textContent = t("cross.heading", { layer: map.layer, head: map.head });
}
