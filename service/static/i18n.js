// The viewer's words in Spanish and English. The language is the first of the browser's preferred languages
// (navigator.languages) that the viewer speaks, English when none is; the switch in the header overrides it
// and is remembered. Static labels carry data-i18n="KEY" (text), data-i18n-placeholder / data-i18n-title
// (attributes); viewer.js asks t("KEY", {name: value}) for the ones it writes. Every key exists in both
// languages (tests/service/test_viewer_i18n.py checks it).
"use strict";

const MESSAGES = {
  en: {
    "page.title": "atencion · attention viewer",
    "header.subtitle": "attention viewer",
    "header.caveat": "Raw attention is not an explanation (Jain & Wallace 2019): read it next to rollout and gradient × attention below.",
    "language": "Language",
    "form.text": "Text",
    "form.model": "Model",
    "form.layers": "Layers",
    "form.heads": "Heads",
    "form.target": "Target",
    "form.api_key": "API key",
    "form.run": "Analyse",
    "placeholder.layers": "all, e.g. 0,1",
    "placeholder.heads": "all, e.g. 0,2",
    "placeholder.target": "default",
    "placeholder.api_key": "if required",
    "title.target": "token position whose prediction gradient × attention explains",
    "grid.title": "Layers × heads",
    "grid.scale": "Colour scale",
    "grid.scale_head": "per head (0 – head max)",
    "grid.scale_absolute": "absolute (0 – 1)",
    "grid.layout": "layout: grey = structurally zero",
    "grid.masked": "masked",
    "grid.skipped": "block never computed",
    "detail.title": "Detail",
    "detail.download": "Download PNG",
    "arcs.title": "Arcs",
    "across.title": "Across layers",
    "across.help": "Click a token to choose the row. Rollout (Abnar & Zuidema 2020): how much of each input token reaches the chosen position through all layers. Gradient × attention (Chefer et al. 2021): which tokens raised the log-probability of the target's prediction.",
    "rollout.title": "Rollout",
    "gradient.title": "Gradient × attention",
    "stats.title": "Per-head statistics",
    "stats.help": "Entropy against ln(#keys the layout allows); distance in tokens; the rest is the mean share of attention on that kind of key (Clark et al. 2019). Click a row to open its head.",
    "stats.layer": "layer", "stats.head": "head", "stats.entropy": "entropy", "stats.max": "max",
    "stats.norm": "norm.", "stats.distance": "distance", "stats.self": "self", "stats.prev": "prev",
    "stats.next": "next", "stats.special": "special", "stats.punct": "punct.", "stats.keys": "keys",
    "kind.encoder": "encoder", "kind.decoder": "decoder", "kind.translator": "translator",
    "cross.title": "Cross-attention",
    "cross.help": "A translator's decoder (rows: target tokens, each row predicting the next) looking at the encoded source (columns). Click a thumbnail to open it. Rollout through the decoder and gradient × attention say which source tokens the chosen target row drew on.",
    "cross.rollout": "Rollout to the source",
    "cross.gradient": "Gradient × attention to the source",
    "cross.gradient_target": "(row {position}: predicting «{token}»)",
    "cross.off": "(off)",
    "cross.heading": "Cross-attention · layer {layer}, head {head} (rows: target, columns: source)",
    "status.no_model": "This server serves no model.",
    "status.no_models_listed": "Could not list the models ({error}). An API key may be needed.",
    "status.bad_indices": "\"{text}\" is not a list like 0,2",
    "status.analysing": "Analysing…",
    "status.done": "{tokens} tokens · layers × heads: {layers} × {heads} · {ms} ms",
    "summary.pattern": "pattern {pattern}",
    "summary.blocks_of": "blocks of {size}",
    "summary.cells_allowed": "{share}% of cells allowed",
    "summary.blocks_computed": "{share}% of blocks computed",
    "grid.head": "head {head}",
    "grid.layer": "layer {layer}",
    "grid.cell": "layer {layer}, head {head}",
    "detail.heading": "Layer {layer}, head {head}",
    "detail.causal": "causal",
    "detail.axes": "query ↓ key →",
    "hover.skipped": "0 (never computed: block skipped)",
    "hover.masked": "0 (masked by the layout)",
    "rollout.row": "— what reaches «{token}» (position {row})",
    "gradient.none": "— not computed",
    "gradient.next": "next token",
    "gradient.masked_hidden": "masked token (hidden for this)",
    "gradient.masked": "masked token",
    "gradient.target": "— target position {position}, {what} «{token}» (log p = {logp})",
  },
  es: {
    "page.title": "atencion · visor de atención",
    "header.subtitle": "visor de atención",
    "header.caveat": "La atención cruda no es una explicación (Jain y Wallace 2019): léela junto al rollout y al gradiente × atención de más abajo.",
    "language": "Idioma",
    "form.text": "Texto",
    "form.model": "Modelo",
    "form.layers": "Capas",
    "form.heads": "Cabezas",
    "form.target": "Objetivo",
    "form.api_key": "Clave de API",
    "form.run": "Analizar",
    "placeholder.layers": "todas, p. ej. 0,1",
    "placeholder.heads": "todas, p. ej. 0,2",
    "placeholder.target": "por omisión",
    "placeholder.api_key": "si se pide",
    "title.target": "posición del token cuya predicción explica el gradiente × atención",
    "grid.title": "Capas × cabezas",
    "grid.scale": "Escala de color",
    "grid.scale_head": "por cabeza (0 – máximo de la cabeza)",
    "grid.scale_absolute": "absoluta (0 – 1)",
    "grid.layout": "disposición: gris = cero estructural",
    "grid.masked": "enmascarado",
    "grid.skipped": "bloque nunca calculado",
    "detail.title": "Detalle",
    "detail.download": "Descargar PNG",
    "arcs.title": "Arcos",
    "across.title": "A través de las capas",
    "across.help": "Haz clic en un token para elegir la fila. Rollout (Abnar y Zuidema 2020): cuánto de cada token de entrada llega a la posición elegida a través de todas las capas. Gradiente × atención (Chefer et al. 2021): qué tokens subieron la log-probabilidad de la predicción objetivo.",
    "rollout.title": "Rollout",
    "gradient.title": "Gradiente × atención",
    "stats.title": "Estadísticas por cabeza",
    "stats.help": "Entropía frente a ln(n.º de claves que la disposición permite); distancia en tokens; el resto es la fracción media de atención sobre ese tipo de clave (Clark et al. 2019). Haz clic en una fila para abrir su cabeza.",
    "stats.layer": "capa", "stats.head": "cabeza", "stats.entropy": "entropía", "stats.max": "máx.",
    "stats.norm": "norm.", "stats.distance": "distancia", "stats.self": "sí mismo", "stats.prev": "anterior",
    "stats.next": "siguiente", "stats.special": "especial", "stats.punct": "puntuación", "stats.keys": "claves",
    "kind.encoder": "codificador", "kind.decoder": "decodificador", "kind.translator": "traductor",
    "cross.title": "Atención cruzada",
    "cross.help": "El decodificador de un traductor (filas: tokens del destino, cada fila predice el siguiente) mirando el origen codificado (columnas). Haz clic en una miniatura para abrirla. El rollout a través del decodificador y el gradiente × atención dicen de qué tokens del origen tomó la fila elegida.",
    "cross.rollout": "Rollout hacia el origen",
    "cross.gradient": "Gradiente × atención hacia el origen",
    "cross.gradient_target": "(fila {position}: predice «{token}»)",
    "cross.off": "(desactivado)",
    "cross.heading": "Atención cruzada · capa {layer}, cabeza {head} (filas: destino, columnas: origen)",
    "status.no_model": "Este servidor no sirve ningún modelo.",
    "status.no_models_listed": "No se pudieron listar los modelos ({error}). Quizá haga falta una clave de API.",
    "status.bad_indices": "«{text}» no es una lista como 0,2",
    "status.analysing": "Analizando…",
    "status.done": "{tokens} tokens · capas × cabezas: {layers} × {heads} · {ms} ms",
    "summary.pattern": "patrón {pattern}",
    "summary.blocks_of": "bloques de {size}",
    "summary.cells_allowed": "{share} % de las celdas permitidas",
    "summary.blocks_computed": "{share} % de los bloques calculados",
    "grid.head": "cabeza {head}",
    "grid.layer": "capa {layer}",
    "grid.cell": "capa {layer}, cabeza {head}",
    "detail.heading": "Capa {layer}, cabeza {head}",
    "detail.causal": "causal",
    "detail.axes": "consulta ↓ clave →",
    "hover.skipped": "0 (nunca calculado: bloque omitido)",
    "hover.masked": "0 (enmascarado por la disposición)",
    "rollout.row": "— lo que llega a «{token}» (posición {row})",
    "gradient.none": "— no calculado",
    "gradient.next": "siguiente token",
    "gradient.masked_hidden": "token enmascarado (oculto para esto)",
    "gradient.masked": "token enmascarado",
    "gradient.target": "— posición objetivo {position}, {what} «{token}» (log p = {logp})",
  },
};
const LANGUAGES = { es: "Español", en: "English" };
const STORED = "atencion.language";

function preferredLanguage() {
  let stored = null;
  try { stored = localStorage.getItem(STORED); } catch (_) { stored = null; }
  if (stored in MESSAGES) return stored;
  for (const tag of navigator.languages || [navigator.language || ""]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in MESSAGES) return base;
  }
  return "en";
}

let language = preferredLanguage();

// The message KEY in the current language, {name} replaced by vars.name.
function t(key, vars = {}) {
  const text = MESSAGES[language][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

function translatePage() {
  document.documentElement.lang = language;
  document.title = t("page.title");
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) {
    element.placeholder = t(element.dataset.i18nPlaceholder);
  }
  for (const element of document.querySelectorAll("[data-i18n-title]")) element.title = t(element.dataset.i18nTitle);
  const select = document.getElementById("language");
  if (select) select.value = language;
}

// Switch the page to LANG; viewer.js redraws what it wrote on the "i18n:change" event.
function setLanguage(lang) {
  if (!(lang in MESSAGES)) return;
  language = lang;
  try { localStorage.setItem(STORED, lang); } catch (_) { /* private mode: not remembered */ }
  translatePage();
  document.dispatchEvent(new CustomEvent("i18n:change", { detail: { language } }));
}

(function setUp() {
  const select = document.getElementById("language");
  if (select) {
    for (const [code, name] of Object.entries(LANGUAGES)) {
      const option = document.createElement("option");
      option.value = code;
      option.textContent = name;
      select.append(option);
    }
    select.addEventListener("change", () => setLanguage(select.value));
  }
  translatePage();
})();
