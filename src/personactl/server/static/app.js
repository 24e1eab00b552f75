"use strict";

// personactl: try a persona. Plain ES2020, no framework.

const state = {
  vectors: [],          // from GET /personas
  traits: [],
  picks: new Map(),     // vector name -> {checked, coef, layer}; survives reloads
  controller: null,     // AbortController of the running generation
  maxTokens: 512,       // the server's cap on max_tokens (GET /personas limits)
  meterLayers: {},      // vector name -> layers where its meter reads in answer units
  jobRunning: false,
};

// The meter's colour scale, in its own units (+1 = the typical trait answer): fixed, so runs compare.
const METER_SCALE = 2;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of [].concat(children)) node.append(child);
  return node;
}

// ---------- error banner ----------

// The banner is hidden whenever it is empty.
function showError(message) {
  const banner = $("error");
  banner.textContent = message ? String(message) : "";
  banner.hidden = !message;
}

const clearError = () => showError("");

// ---------- HTTP ----------

async function errorMessage(res) {
  const text = await res.text().catch(() => "");
  try {
    const data = JSON.parse(text);
    if (data && data.error && data.error.message) return `HTTP ${res.status}: ${data.error.message}`;
    if (data && typeof data.detail === "string") return `HTTP ${res.status}: ${data.detail}`;
    if (data && Array.isArray(data.detail)) return `HTTP ${res.status}: ${data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ")}`;
  } catch { /* not JSON */ }
  return `HTTP ${res.status} ${res.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`;
}

async function request(path, { method = "GET", body, signal } = {}) {
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error(`network error: could not reach the server (${err.message})`);
  }
  if (!res.ok) throw Object.assign(new Error(await errorMessage(res)), { status: res.status });
  return res;
}

async function getJSON(path, options) {
  const res = await request(path, options);
  try {
    return await res.json();
  } catch {
    throw new Error(`the server sent a response that is not JSON for ${path}`);
  }
}

// Reads an OpenAI-style SSE stream ("data: {json}" events, ending with "data: [DONE]").
async function streamChat(body, signal, onChunk) {
  const res = await request("/v1/chat/completions", { method: "POST", body, signal });
  if (!res.body) throw new Error("this browser cannot read streamed responses");
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  const dispatch = () => {           // returns true on [DONE]
    if (!data.length) return false;
    const payload = data.join("\n");
    data = [];
    if (payload.trim() === "[DONE]") return true;
    let chunk;
    try { chunk = JSON.parse(payload); } catch { throw new Error(`unreadable stream chunk: ${payload.slice(0, 120)}`); }
    if (chunk.error) throw new Error(chunk.error.message || "the server reported an error during generation");
    onChunk(chunk);
    return false;
  };
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value, { stream: !done });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = done ? "" : lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (dispatch()) { reader.cancel().catch(() => {}); return; }
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
    if (done) { dispatch(); return; }
  }
}

// ---------- personas ----------

async function loadPersonas() {
  const data = await getJSON("/personas");
  state.vectors = Array.isArray(data.vectors) ? data.vectors : [];
  state.traits = Array.isArray(data.traits) ? data.traits : [];
  state.meterLayers = Object.fromEntries(state.vectors.map((v) => [v.name, Array.isArray(v.meter_layers) ? v.meter_layers : []]));
  applyLimits(data.limits || {});
  renderVectors(Array.isArray(data.broken) ? data.broken : []);
  renderAdapters(Array.isArray(data.adapters) ? data.adapters : []);
  renderTraits();
}

async function reloadPersonas() {
  clearError();
  try {
    await loadPersonas();
  } catch (err) {
    $("vector-list").replaceChildren(el("p", { className: "muted", textContent: "could not load the personas (see the error above)" }));
    if (err.status === 401) {
      $("settings").open = true;
      $("token").focus();
      showError("this server needs its bearer token: enter it under “settings” (top right), then press “reload”");
    } else {
      showError(`could not load /personas: ${err.message}`);
    }
  }
}

// The server's caps: max tokens follows the server's own limit.
function applyLimits(limits) {
  const cap = Number(limits.max_tokens);
  if (Number.isInteger(cap) && cap >= 1) state.maxTokens = cap;
  const input = $("max-tokens");
  input.max = String(state.maxTokens);
  if (Number(input.value) > state.maxTokens) input.value = String(state.maxTokens);
  $("max-tokens-cap").textContent = `(at most ${state.maxTokens} on this server)`;
}

function pickFor(vector) {
  if (!state.picks.has(vector.name)) {
    state.picks.set(vector.name, { checked: false, coef: Number(vector.coef ?? 1), layer: vector.layer });
  }
  return state.picks.get(vector.name);
}

function renderVectors(broken) {
  const list = $("vector-list");
  const unusable = broken.map((b) => el("p", { className: "broken small", textContent: `${b.kind} ${b.name} is unusable: ${b.reason}` }));
  if (!state.vectors.length) {
    list.replaceChildren(el("p", { className: "empty",
      textContent: "no persona vectors on this server: start it with --vectors DIR, or define a trait below" }), ...unusable);
    return;
  }
  list.replaceChildren(...state.vectors.map(vectorItem), ...unusable);
}

function vectorItem(vector) {
  const pick = pickFor(vector);
  const [min, max] = Array.isArray(vector.coef_range) ? vector.coef_range : [-4, 4];
  const layers = Array.isArray(vector.layers) && vector.layers.length ? vector.layers : [vector.layer];
  const id = `pick-${vector.name}`;

  const box = el("input", { type: "checkbox", className: "vector-pick", value: vector.name, id, checked: pick.checked });
  const info = [vector.trait && vector.trait !== vector.name ? `trait ${vector.trait}` : "", vector.model || ""].filter(Boolean).join(" · ");
  const label = el("label", { htmlFor: id, className: "vector-label" },
    [el("span", { className: "vector-name", textContent: vector.name }), el("span", { className: "muted small", textContent: info })]);

  const slider = el("input", { type: "range", className: "coef-slider", min, max, step: 0.1, value: pick.coef,
    title: `coefficient (${min} to ${max})` });
  slider.dataset.name = vector.name;
  const readout = el("output", { className: "coef-readout", textContent: formatCoef(pick.coef) });
  const guessed = !vector.coef_source || String(vector.coef_source).startsWith("default");
  const range = el("p", { className: `coef-range${guessed ? " guessed" : ""}`,
    textContent: `coefficient ${formatNumber(min)} to ${formatNumber(max)}: ${guessed ? "a default range, not measured" : "the swept range"} (${vector.coef_source || "no source given"})` });
  range.dataset.name = vector.name;
  const layer = el("input", { type: "number", className: "layer-input", min: Math.min(...layers), max: Math.max(...layers),
    step: 1, value: pick.layer, title: `layer (recommended: ${vector.layer})` });
  layer.dataset.name = vector.name;
  const controls = el("div", { className: "vector-controls", hidden: !pick.checked }, [
    el("span", { className: "coef-bound", textContent: formatNumber(min) }), slider, el("span", { className: "coef-bound", textContent: formatNumber(max) }),
    readout, el("label", { className: "layer-label", textContent: "layer" }, [layer]), range,
  ]);

  box.addEventListener("change", () => { pick.checked = box.checked; controls.hidden = !box.checked; });
  slider.addEventListener("input", () => { pick.coef = Number(slider.value); readout.textContent = formatCoef(pick.coef); });
  layer.addEventListener("input", () => { pick.layer = layer.value === "" ? NaN : Number(layer.value); });
  return el("div", { className: "vector-item" }, [el("div", { className: "vector-row" }, [box, label]), controls]);
}

function renderAdapters(adapters) {
  const select = $("adapter");
  const current = select.value;
  const options = adapters.map((a) => el("option", { value: a.name, textContent: a.name, title: a.description || "" }));
  select.replaceChildren(el("option", { value: "", textContent: "none" }), ...options);
  select.value = adapters.some((a) => a.name === current) ? current : "";
  select.adapters = adapters;
  showAdapterDescription();
}

function showAdapterDescription() {
  const select = $("adapter");
  const adapter = (select.adapters || []).find((a) => a.name === select.value);
  $("adapter-description").textContent = adapter ? adapter.description || "" : "";
}

function renderTraits() {
  $("known-traits").replaceChildren(...state.traits.map((t) => el("option", { value: t.name, textContent: t.description || "" })));
}

function formatCoef(coef) {
  return `×${Number(coef).toFixed(1)}`;
}

function formatNumber(x) {
  return Number(x) < 0 ? `−${Math.abs(Number(x))}` : String(Number(x));
}

// ---------- generation ----------

function selectedVectors() {
  return state.vectors.filter((v) => pickFor(v).checked).map((v) => ({ vector: v, ...pickFor(v) }));
}

function readGenerateInput() {
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new Error("type a prompt first");
  const maxTokens = Number($("max-tokens").value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > state.maxTokens) {
    throw new Error(`max tokens must be a whole number from 1 to ${state.maxTokens} (this server's cap)`);
  }
  const picks = selectedVectors();
  for (const p of picks) {
    const layers = p.vector.layers || [p.vector.layer];
    if (!Number.isInteger(p.layer) || !layers.includes(p.layer)) {
      throw new Error(`layer for "${p.vector.name}" must be one of ${Math.min(...layers)}..${Math.max(...layers)}`);
    }
  }
  const adapter = $("adapter").value;
  if (!picks.length && !adapter) throw new Error("pick at least one persona vector (or an adapter) to steer with");
  return { prompt, maxTokens, picks, adapter };
}

function buildPersona({ picks, adapter }) {
  const persona = {
    vectors: picks.map((p) => ({ name: p.vector.name, coef: p.coef, layers: [p.layer] })),
    positions: "response",
    meter: true,
  };
  if (adapter) persona.adapter = adapter;
  return persona;
}

function steeredTitle({ picks, adapter }) {
  const parts = picks.map((p) => `${p.vector.name} ×${Number(p.coef.toFixed(2))} @ layer ${p.layer}`);
  if (adapter) parts.push(`adapter ${adapter}`);
  return `steered: ${parts.join(" + ")}`;
}

function setStreaming(on) {
  $("generate").disabled = on;
  $("stop").disabled = !on;
}

async function generate() {
  clearError();
  let input;
  try { input = readGenerateInput(); } catch (err) { showError(err.message); return; }

  const base = { model: "personactl", messages: [{ role: "user", content: input.prompt }],
    max_tokens: input.maxTokens, temperature: 0, stream: true };
  const steered = { ...base, persona: buildPersona(input) };
  $("steered-title").textContent = steeredTitle(input);
  resetMeter(input.picks);

  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);
  const results = await Promise.allSettled([
    runPane("baseline", base, controller.signal, null),
    runPane("steered", steered, controller.signal, addMeterToken),
  ]);
  state.controller = null;
  setStreaming(false);
  const errors = results.map((r, i) => (r.status === "rejected" ? `${i ? "steered" : "baseline"}: ${r.reason.message}` : null))
    .filter(Boolean);
  if (errors.length) showError(errors.join(" — "));
}

// Streams one answer into a pane; onToken(text, meter) also receives every token (for the meter).
async function runPane(id, body, signal, onToken) {
  const pane = $(id);
  const status = $(`${id}-status`);
  pane.textContent = "";
  pane.classList.add("streaming");
  status.textContent = "streaming…";
  let finish = null;
  try {
    await streamChat(body, signal, (chunk) => {
      const choice = (chunk.choices || [])[0] || {};
      const text = (choice.delta && choice.delta.content) || "";
      if (text) {
        pane.append(text);
        pane.scrollTop = pane.scrollHeight;
        if (onToken) onToken(text, chunk.persona_meter);
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
    status.textContent = finish === "length" ? "done (stopped at max tokens)" : "done";
  } catch (err) {
    if (err.name === "AbortError") { status.textContent = "stopped"; return; }
    status.textContent = "error";
    throw err;
  } finally {
    pane.classList.remove("streaming");
  }
}

function stop() {
  if (state.controller) state.controller.abort();
}

// ---------- trait meter ----------

function resetMeter(picks) {
  $("meter").replaceChildren();
  const select = $("meter-vector");
  select.replaceChildren(...(picks.length ? picks : [{ vector: { name: "" } }]).map((p) =>
    el("option", { value: p.vector.name, textContent: p.vector.name || "—", layer: p.layer })));
  select.disabled = picks.length < 2;
  updateLegend();
}

function meterValue(span) {
  const name = $("meter-vector").value;
  const value = span.meter && span.meter[name];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function addMeterToken(text, meter) {
  const span = el("span", { className: "tok", textContent: text });
  span.meter = meter && typeof meter === "object" ? meter : {};
  $("meter").append(span);
  colorToken(span);
  $("meter").scrollTop = $("meter").scrollHeight;
}

function colorToken(span) {
  const value = meterValue(span);
  const name = $("meter-vector").value;
  const x = value === null ? 0 : Math.max(-1, Math.min(1, value / METER_SCALE));
  span.dataset.value = value === null ? "" : String(value);
  span.title = value === null ? `no meter value for ${name || "this token"}` : `${name}: ${value.toFixed(3)}`;
  span.style.background = value === null ? "" : meterColor(x);
  span.style.color = Math.abs(x) > 0.65 ? "#fff" : "";
}

// -1 -> blue, 0 -> white, +1 -> red
function meterColor(x) {
  const target = x < 0 ? [37, 99, 235] : [220, 38, 38];
  const t = Math.abs(x);
  const [r, g, b] = target.map((c) => Math.round(255 + (c - 255) * t));
  return `rgb(${r}, ${g}, ${b})`;
}

function onMeterVectorChange() {
  for (const span of $("meter").querySelectorAll(".tok")) colorToken(span);
  updateLegend();
}

// The legend is in the meter's units; where the vector kept no answer projections, the meter is a raw projection.
function updateLegend() {
  const option = $("meter-vector").selectedOptions[0];
  const name = option ? option.value : "";
  const raw = name && !(state.meterLayers[name] || []).includes(option.layer);
  $("legend-min").textContent = `−${METER_SCALE}`;
  $("legend-max").textContent = `+${METER_SCALE}`;
  $("legend-text").textContent = raw
    ? `${name} kept no answer projections at layer ${option.layer}: the meter is its raw projection (same fixed scale, beyond ±${METER_SCALE} at full colour)`
    : `+1: the typical trait answer · −1: the typical non-trait answer · 0: midway (a fixed scale, the same for every run; beyond ±${METER_SCALE} at full colour; hover a token for its value)`;
}

// ---------- trait extraction ----------

const lines = (id) => $(id).value.split("\n").map((s) => s.trim()).filter(Boolean);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function readTrait() {
  const trait = {
    name: $("trait-name").value.trim(),
    description: $("trait-description").value.trim(),
    positive: lines("trait-positive"),
    negative: lines("trait-negative"),
    questions: lines("trait-questions"),
  };
  const problems = [];
  if (!trait.name) problems.push("give the trait a name");
  else if (!/^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$/.test(trait.name)) {
    problems.push("the name may only use letters, digits, _ and - (not starting with -, at most 64 characters)");
  }
  if (trait.positive.length < 1) problems.push("add at least 1 positive instruction");
  if (trait.negative.length < 1) problems.push("add at least 1 negative instruction");
  if (trait.questions.length < 2) problems.push("add at least 2 questions");
  if (problems.length) throw new Error(`cannot define this trait: ${problems.join("; ")}`);
  return trait;
}

function showJob(job) {
  $("job-box").hidden = false;
  const progress = Number(job.progress);
  $("job-progress").value = Number.isFinite(progress) ? Math.min(1, Math.max(0, progress)) : 0;
  const pct = Number.isFinite(progress) ? ` ${Math.round(progress * 100)}%` : "";
  $("job-status").textContent = `${job.name || ""} · ${job.status}${pct}${job.message ? ` · ${job.message}` : ""}`;
}

async function pollJob(id) {
  for (;;) {
    await sleep(1000);
    const job = await getJSON(`/personas/jobs/${encodeURIComponent(id)}`);
    showJob(job);
    if (job.status === "done") return job;
    if (job.status === "failed") throw new Error(`extraction of "${job.name}" failed: ${job.error || job.message || "unknown error"}`);
  }
}

async function extract(event) {
  event.preventDefault();
  if (state.jobRunning) return;
  clearError();
  let trait;
  try { trait = readTrait(); } catch (err) { showError(err.message); return; }
  state.jobRunning = true;
  $("extract").disabled = true;
  showJob({ name: trait.name, status: "submitting", progress: 0 });
  try {
    const { job } = await getJSON("/personas/extract", { method: "POST", body: trait });
    if (!job) throw new Error("the server did not return a job id");
    showJob({ name: trait.name, status: "queued", progress: 0 });
    const done = await pollJob(job);
    $("job-progress").value = 1;
    $("job-status").textContent = `done: vector "${done.name || trait.name}" is ready in the list above`;
    await loadPersonas();
  } catch (err) {
    $("job-status").textContent = "failed";
    showError(err.message);
  } finally {
    state.jobRunning = false;
    $("extract").disabled = false;
  }
}

function fillTraitDescription() {
  const trait = state.traits.find((t) => t.name === $("trait-name").value.trim());
  if (trait && !$("trait-description").value.trim()) $("trait-description").value = trait.description || "";
}

// ---------- wiring ----------

function init() {
  $("token").value = sessionStorage.getItem("personactl-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("personactl-token", $("token").value.trim()));
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") reloadPersonas(); });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stop);
  $("reload").addEventListener("click", reloadPersonas);
  $("adapter").addEventListener("change", showAdapterDescription);
  $("meter-vector").addEventListener("change", onMeterVectorChange);
  $("trait-form").addEventListener("submit", extract);
  $("trait-name").addEventListener("change", fillTraitDescription);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("generate").disabled) generate();
  });
  window.addEventListener("unhandledrejection", (e) => showError(e.reason && e.reason.message ? e.reason.message : String(e.reason)));
  reloadPersonas();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
