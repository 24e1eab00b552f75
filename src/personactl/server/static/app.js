"use strict";

// personactl: try a persona. Plain ES2020, no framework.

const state = {
  vectors: [],          // from GET /personas
  traits: [],
  picks: new Map(),     // vector name -> {checked, coef, layer}; survives reloads
  controller: null,     // AbortController of the running generation
  meterMax: 0,          // running max of |value| for the vector that colours the tokens
  jobRunning: false,
};

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
  if (!res.ok) throw new Error(await errorMessage(res));
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
  renderVectors();
  renderAdapters(Array.isArray(data.adapters) ? data.adapters : []);
  renderTraits();
}

async function reloadPersonas() {
  clearError();
  try {
    await loadPersonas();
  } catch (err) {
    $("vector-list").replaceChildren(el("p", { className: "muted", textContent: "could not load the personas (see the error above)" }));
    showError(`could not load /personas: ${err.message}`);
  }
}

function pickFor(vector) {
  if (!state.picks.has(vector.name)) {
    state.picks.set(vector.name, { checked: false, coef: Number(vector.coef ?? 1), layer: vector.layer });
  }
  return state.picks.get(vector.name);
}

function renderVectors() {
  const list = $("vector-list");
  if (!state.vectors.length) {
    list.replaceChildren(el("p", { className: "empty",
      textContent: "no persona vectors on this server: start it with --vectors DIR, or define a trait below" }));
    return;
  }
  list.replaceChildren(...state.vectors.map(vectorItem));
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
  const layer = el("input", { type: "number", className: "layer-input", min: Math.min(...layers), max: Math.max(...layers),
    step: 1, value: pick.layer, title: `layer (recommended: ${vector.layer})` });
  layer.dataset.name = vector.name;
  const controls = el("div", { className: "vector-controls", hidden: !pick.checked }, [
    slider, readout, el("label", { className: "layer-label", textContent: "layer" }, [layer]),
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

// ---------- generation ----------

function selectedVectors() {
  return state.vectors.filter((v) => pickFor(v).checked).map((v) => ({ vector: v, ...pickFor(v) }));
}

function readGenerateInput() {
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new Error("type a prompt first");
  const maxTokens = Number($("max-tokens").value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > 2048) throw new Error("max tokens must be a whole number from 1 to 2048");
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
  resetMeter(input.picks.map((p) => p.vector.name));

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

function resetMeter(names) {
  $("meter").replaceChildren();
  state.meterMax = 0;
  const select = $("meter-vector");
  select.replaceChildren(...(names.length ? names : [""]).map((n) => el("option", { value: n, textContent: n || "—" })));
  select.disabled = names.length < 2;
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
  const value = meterValue(span);
  if (value !== null && Math.abs(value) > state.meterMax) {
    state.meterMax = Math.abs(value);
    recolorMeter();             // the scale grew: every token's colour changes
  } else {
    colorToken(span);
  }
  $("meter").scrollTop = $("meter").scrollHeight;
}

function colorToken(span) {
  const value = meterValue(span);
  const name = $("meter-vector").value;
  const t = value !== null && state.meterMax > 0 ? Math.min(1, Math.abs(value) / state.meterMax) : 0;
  span.dataset.value = value === null ? "" : String(value);
  span.title = value === null ? `no meter value for ${name || "this token"}` : `${name}: ${value.toFixed(3)}`;
  span.style.background = value === null ? "" : meterColor(value < 0 ? -t : t);
  span.style.color = t > 0.65 ? "#fff" : "";
}

// -1 -> blue, 0 -> white, +1 -> red
function meterColor(x) {
  const target = x < 0 ? [37, 99, 235] : [220, 38, 38];
  const t = Math.abs(x);
  const [r, g, b] = target.map((c) => Math.round(255 + (c - 255) * t));
  return `rgb(${r}, ${g}, ${b})`;
}

function recolorMeter() {
  for (const span of $("meter").querySelectorAll(".tok")) colorToken(span);
  updateLegend();
}

function onMeterVectorChange() {
  const spans = [...$("meter").querySelectorAll(".tok")];
  state.meterMax = spans.reduce((m, s) => Math.max(m, Math.abs(meterValue(s) ?? 0)), 0);
  recolorMeter();
}

function updateLegend() {
  const m = state.meterMax > 0 ? state.meterMax : 1;
  $("legend-min").textContent = `−${m.toFixed(2)}`;
  $("legend-max").textContent = `+${m.toFixed(2)}`;
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
