// stylegan-jax visualizer: plain JavaScript, no build step. Talks to the JSON API of
// stylegan_jax/apis/visualizer.py; keeps at most one render request in flight and, when it returns, sends
// only the latest settings (dragging a slider does not queue up stale renders).
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let info = null;         // /api/info of the selected step
let pending = false;     // settings changed since the last request was sent
let inFlight = false;    // a request is running
let renders = 0;         // images shown so far (tests wait on data-renders)
let failed = false;      // the last request was refused

function setState(state) {
  document.body.dataset.state = state;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  let body;
  try {
    body = await r.json();
  } catch (e) {
    body = { error: `HTTP ${r.status} ${r.statusText}` };
  }
  return { status: r.status, ok: r.ok, body };
}

// --- settings -> query string ---------------------------------------------------------------------------

function params() {
  const p = new URLSearchParams();
  p.set("step", $("step").value);
  p.set("seed", $("seed").value.trim());
  p.set("psi", $("psi").value);
  if (info && info.c_dim > 0) p.set("class", $("class").value.trim());
  if (info && info.input_transform) {
    p.set("tx", $("tx").value);
    p.set("ty", $("ty").value);
    p.set("rotate", $("rotate").value);
  }
  if (info && info.noise_inputs) p.set("noise", $("noise").value);
  if ($("mix-on").checked) {
    p.set("mix", $("mix").value.trim());
    p.set("mix_lo", $("mix-lo").value.trim());
    p.set("mix_hi", $("mix-hi").value.trim());
  }
  const layer = $("layer").value;
  if (layer) {
    p.set("layer", layer);
    p.set("channel", $("rms").checked ? "rms" : $("channel").value.trim());
  }
  return p.toString();
}

// --- rendering --------------------------------------------------------------------------------------------

function schedule() {
  pending = true;
  if (!inFlight) pump();
}

async function pump() {
  inFlight = true;
  while (pending) {
    pending = false;
    setState("rendering");
    const query = params();
    const t0 = performance.now();
    let res;
    try {
      res = await getJSON("/api/render?" + query);
    } catch (e) {
      failed = true;
      showError(`request failed: ${e}`);
      continue;
    }
    if (res.status === 503) {            // at capacity: try again shortly with the latest settings
      showError(`${res.body.error}`);
      await sleep(400);
      pending = true;
      continue;
    }
    if (!res.ok) {
      failed = true;
      showError(res.body.error || `HTTP ${res.status}`);
      continue;
    }
    failed = false;
    await show(res.body, query, performance.now() - t0);
    if (!pending) showError("");
  }
  inFlight = false;
  setState(failed ? "error" : "idle");
}

async function show(r, query, roundTripMs) {
  const img = $("image");
  img.src = r.image;
  try {
    await img.decode();
  } catch (e) { /* shown anyway */ }
  img.dataset.query = query;
  $("image-size").textContent = `${r.width}×${r.height}`;
  let timing = r.cached ? "cached" : `${r.render_ms.toFixed(1)} ms`;
  if (r.activation) timing += `, activations ${r.activation.render_ms.toFixed(1)} ms`;
  timing += ` (round trip ${roundTripMs.toFixed(0)} ms)`;
  $("render-time").textContent = timing;
  $("command").value = r.command;
  $("command-note").textContent = r.command_note;
  $("download").href = "/api/download?" + query;
  const fig = $("activation-figure");
  if (r.activation) {
    const a = r.activation;
    $("activation").src = a.image;
    try {
      await $("activation").decode();
    } catch (e) { /* shown anyway */ }
    const what = a.channel === null ? "RMS over channels" : `channel ${a.channel}`;
    $("activation-caption").textContent =
      `${a.layer} ${a.shape.join("×")}, ${what}: min ${a.min.toPrecision(3)}, max ${a.max.toPrecision(3)}, ` +
      `mean ${a.mean.toPrecision(3)}, std ${a.std.toPrecision(3)}`;
    fig.hidden = false;
  } else {
    fig.hidden = true;
  }
  renders += 1;
  document.body.dataset.renders = String(renders);
}

// --- model facts -> controls ------------------------------------------------------------------------------

function fillSteps(steps, selected) {
  const sel = $("step");
  const have = Array.from(sel.options).map((o) => Number(o.value));
  if (have.length === steps.length && have.every((s, i) => s === steps[i])) {
    sel.value = String(selected);
    return;
  }
  sel.innerHTML = "";
  for (const s of steps) {
    const o = document.createElement("option");
    o.value = String(s);
    o.textContent = String(s);
    sel.appendChild(o);
  }
  sel.value = String(selected);
}

function applyInfo(i) {
  info = i;
  fillSteps(i.steps, i.step);
  const kind = i.input_transform ? "StyleGAN3" : "StyleGAN2";
  $("model-summary").textContent =
    `${kind} ${i.img_resolution}×${i.img_resolution}, z ${i.z_dim}, w ${i.w_dim}, ${i.num_ws} ws` +
    (i.c_dim > 0 ? `, ${i.c_dim} classes` : "") + ` — ${i.network} of ${i.ckpt}`;
  $("class-row").hidden = i.c_dim === 0;
  $("class").max = String(Math.max(0, i.c_dim - 1));
  for (const id of ["tx", "ty", "rotate", "reset-transform"]) $(id).disabled = !i.input_transform;
  $("transform-note").textContent = i.input_transform ? "" : "this generator has no input transform";
  $("noise").disabled = !i.noise_inputs;
  $("noise-note").textContent = i.noise_inputs ? "" : "this generator has no noise inputs";
  for (const id of ["mix-lo", "mix-hi"]) $(id).max = String(i.num_ws - 1);
  if (!$("mix-hi").dataset.touched) $("mix-hi").value = String(Math.min(6, i.num_ws - 1));
  const layerSel = $("layer");
  const current = layerSel.value;
  layerSel.innerHTML = '<option value="">(off)</option>';
  for (const l of i.layers) {
    const o = document.createElement("option");
    o.value = l.name;
    o.textContent = `${l.name} (${l.shape.join("×")})`;
    o.dataset.channels = String(l.shape[l.shape.length - 1]);
    layerSel.appendChild(o);
  }
  if (i.layers.some((l) => l.name === current)) layerSel.value = current;
  layerChanged();
  $("download-note").textContent = i.watermark.downloads
    ? `(carries the keyed provenance watermark, ${i.watermark.num_bits} bits)` : "(not watermarked: no key given)";
}

function layerChanged() {
  const o = $("layer").selectedOptions[0];
  const channels = o && o.dataset.channels ? Number(o.dataset.channels) : 1;
  $("channel").max = String(channels - 1);
  $("channel").disabled = !$("layer").value || $("rms").checked;
  $("rms").disabled = !$("layer").value;
}

async function loadInfo(step) {
  const url = "/api/info" + (step === undefined ? "" : `?step=${encodeURIComponent(step)}`);
  let res = await getJSON(url);
  for (let tries = 0; res.status === 503 && tries < 60; tries++) {  // another tab is rendering: wait for a slot
    showError(res.body.error);
    await sleep(500);
    res = await getJSON(url);
  }
  if (!res.ok) {
    showError(res.body.error || `HTTP ${res.status}`);
    setState("error");
    return false;
  }
  showError("");
  applyInfo(res.body);
  return true;
}

async function pollSteps() {
  try {
    const res = await getJSON("/api/steps");
    if (!res.ok) return;
    const steps = res.body.steps;
    const latest = steps[steps.length - 1];
    const selected = Number($("step").value);
    if ($("follow").checked && latest !== selected) {
      if (await loadInfo(latest)) schedule();
    } else {
      fillSteps(steps, steps.includes(selected) ? selected : latest);
    }
  } catch (e) { /* the next poll retries */ }
}

// --- wiring -----------------------------------------------------------------------------------------------

function syncOutputs() {
  for (const id of ["psi", "tx", "ty", "rotate"]) $(`${id}-value`).textContent = $(id).value;
}

function setSeed(value, fromSlider) {
  const v = Math.max(0, Math.round(value * 100) / 100);
  $("seed").value = String(v);
  if (!fromSlider) $("seed-slider").value = String(Math.min(v, Number($("seed-slider").max)));
}

function wire() {
  const render = () => { syncOutputs(); schedule(); };
  for (const id of ["psi", "tx", "ty", "rotate", "class", "noise", "mix-on", "mix", "mix-lo", "mix-hi",
                    "channel"]) {
    $(id).addEventListener("input", render);
  }
  $("mix-hi").addEventListener("input", () => { $("mix-hi").dataset.touched = "1"; });
  $("seed").addEventListener("input", () => {
    const v = Number($("seed").value);
    if ($("seed").value.trim() !== "" && Number.isFinite(v)) {
      $("seed-slider").value = String(Math.min(Math.max(v, 0), Number($("seed-slider").max)));
    }
    schedule();
  });
  $("seed-slider").addEventListener("input", () => { setSeed(Number($("seed-slider").value), true); schedule(); });
  $("layer").addEventListener("change", () => { layerChanged(); schedule(); });
  $("rms").addEventListener("change", () => { layerChanged(); schedule(); });
  $("step").addEventListener("change", async () => { if (await loadInfo($("step").value)) schedule(); });
  $("follow").addEventListener("change", pollSteps);
  $("reset-transform").addEventListener("click", () => {
    for (const id of ["tx", "ty", "rotate"]) $(id).value = "0";
    render();
  });
  $("copy").addEventListener("click", async () => {
    const text = $("command").value;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      $("command").select();
      document.execCommand("copy");
    }
  });

  // Dragging on the image moves the seed continuously (100 px = 1 seed).
  const img = $("image");
  let drag = null;
  img.addEventListener("pointerdown", (e) => {
    const start = Number($("seed").value);
    drag = { x: e.clientX, seed: Number.isFinite(start) ? start : 0 };
    img.setPointerCapture(e.pointerId);
  });
  img.addEventListener("pointermove", (e) => {
    if (!drag) return;
    setSeed(drag.seed + (e.clientX - drag.x) / 100, false);
    schedule();
  });
  const end = () => { drag = null; };
  img.addEventListener("pointerup", end);
  img.addEventListener("pointercancel", end);
}

async function main() {
  wire();
  syncOutputs();
  if (await loadInfo()) schedule();
  setInterval(pollSteps, 10000);
}

main();
