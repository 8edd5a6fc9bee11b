// ContextDiff Studio: plain JavaScript over the JSON API (/api/openapi.yaml).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { job: null, events: null, boxes: [], drawing: null, health: null, oldestRun: null };
const BOX_COLORS = ["#e4572e", "#2f6fde", "#29a35a", "#d4a017", "#8e44ad", "#16a2b8"];

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// MARK: tabs

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of ["generate", "video", "gallery"]) $(`panel-${panel}`).classList.toggle("hidden", name !== panel);
  if (name === "gallery") loadGallery(true);
}

// MARK: the form

function readForm() {
  const request = {
    prompt: $("prompt").value.trim(),
    sampler: $("sampler").value,
    steps: Number($("steps").value),
    guidance: Number($("guidance").value),
    num_images: Number($("num-images").value),
  };
  const negative = $("negative-prompt").value.trim();
  if (negative) request.negative_prompt = negative;
  if ($("randomize").checked) $("seed").value = String(Math.floor(Math.random() * 4294967295));
  request.seed = Number($("seed").value);
  if (state.health && state.health.layout_prior) {
    request.layout = $("layout-mode").value;
    const boxes = state.boxes.filter((b) => b.phrase.trim());
    if (boxes.length) request.boxes = boxes.map((b) => ({ phrase: b.phrase.trim(), box: b.box }));
  }
  return request;
}

function fillForm(record) {
  const o = record.options;
  $("prompt").value = record.prompts[0] || "";
  $("negative-prompt").value = o.negative_prompt || "";
  $("sampler").value = o.sampler;
  $("steps").value = o.steps;
  $("guidance").value = o.guidance;
  $("num-images").value = o.images_per_prompt;
  $("seed").value = o.seed;
  $("randomize").checked = false;
  if (o.layout) $("layout-mode").value = o.layout;
}

async function generate(event) {
  event.preventDefault();
  const request = readForm();
  if (!request.prompt) { setStatus("Describe the image to generate.", true); return; }
  $("generate").disabled = true;
  $("notices").textContent = "";
  setStatus("Queued…");
  try {
    const job = await api("/api/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    follow(job);
  } catch (error) {
    setStatus(error.message, true);
    $("generate").disabled = false;
  }
}

function follow(job) {
  state.job = job.id;
  $("cancel").disabled = false;
  $("results").replaceChildren();
  show(job);
  if (state.events) state.events.close();
  const events = new EventSource(`/api/jobs/${job.id}/events`);
  state.events = events;
  events.onmessage = (message) => {
    const snapshot = JSON.parse(message.data);
    show(snapshot);
    if (["succeeded", "failed", "cancelled"].includes(snapshot.status)) { events.close(); done(); }
  };
  events.onerror = () => {
    events.close();
    // The stream ended or broke: ask once for the final state.
    api(`/api/jobs/${job.id}`).then((s) => { show(s); done(); }).catch(() => done());
  };
}

// The denoising preview: the server's latest estimate of the images, fetched when it changes
// (one request at a time).
function showPreview(snapshot) {
  if (snapshot.status !== "running" || !snapshot.preview_step) {
    if (snapshot.status !== "queued") $("preview-box").classList.add("hidden");
    return;
  }
  if (state.previewLoading || state.previewStep === snapshot.preview_step) return;
  state.previewLoading = true;
  state.previewStep = snapshot.preview_step;
  const image = $("preview");
  image.onload = image.onerror = () => { state.previewLoading = false; };
  image.src = `/api/jobs/${snapshot.id}/preview?step=${snapshot.preview_step}`;
  $("preview-caption").textContent = `denoising, step ${snapshot.preview_step} of ${snapshot.total}`;
  $("preview-box").classList.remove("hidden");
}

function done() {
  state.previewStep = null;
  state.job = null;
  $("cancel").disabled = true;
  $("generate").disabled = false;
}

function show(snapshot) {
  showPreview(snapshot);
  $("progress").max = snapshot.total || 1;
  $("progress").value = snapshot.completed;
  const seed = `seed ${snapshot.seed}`;
  switch (snapshot.status) {
    case "queued": setStatus(`Queued (${snapshot.position} ahead) · ${seed}`); break;
    case "running":
      setStatus(`${snapshot.phase === "upsampling" ? "Upsampling: step" : "Step"} ${snapshot.completed} of ${snapshot.total} · ${seed}`);
      break;
    case "succeeded": setStatus(`Done in ${snapshot.run.seconds.toFixed(1)} s · ${seed}`); showRun(snapshot.run, $("results")); break;
    case "failed": setStatus(`Failed: ${snapshot.error}`, true); break;
    case "cancelled": setStatus("Cancelled."); break;
  }
  if (snapshot.notices && snapshot.notices.length) $("notices").textContent = snapshot.notices.join(" ");
}

function showRun(run, container) {
  container.replaceChildren();
  run.images.forEach((src, k) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = src;
    image.alt = `${run.prompt} (${k + 1})`;
    const caption = document.createElement("figcaption");
    caption.textContent = `#${k + 1}`;
    figure.append(image, caption);
    container.append(figure);
  });
}

async function cancel() {
  if (!state.job) return;
  $("cancel").disabled = true;
  try { await api(`/api/jobs/${state.job}/cancel`, { method: "POST" }); } catch (error) { setStatus(error.message, true); }
}

// MARK: gallery

async function loadGallery(reset) {
  const gallery = $("gallery");
  if (reset) { gallery.replaceChildren(); state.oldestRun = null; }
  const query = state.oldestRun ? `?limit=24&before=${encodeURIComponent(state.oldestRun)}` : "?limit=24";
  try {
    const { runs } = await api(`/api/runs${query}`);
    for (const run of runs) {
      const figure = document.createElement("figure");
      figure.dataset.run = run.id;
      const image = document.createElement("img");
      image.src = run.images[0];
      image.alt = run.prompt;
      const caption = document.createElement("figcaption");
      caption.textContent = run.prompt;
      caption.title = `${run.prompt} · seed ${run.record.options.seed} · ${run.created_at}`;
      figure.append(image, caption);
      figure.addEventListener("click", () => reload(run, figure));
      gallery.append(figure);
    }
    if (runs.length) state.oldestRun = runs[runs.length - 1].id;
    $("more-runs").classList.toggle("hidden", runs.length < 24);
    if (reset && !runs.length) gallery.textContent = "No runs yet.";
  } catch (error) {
    gallery.textContent = error.message;
  }
}

function reload(run, figure) {
  for (const f of document.querySelectorAll(".gallery figure")) f.classList.remove("selected");
  figure.classList.add("selected");
  fillForm(run.record);
  showRun(run, $("results"));
  setStatus(`Loaded the settings of a run from ${run.created_at} (seed ${run.record.options.seed}).`);
  $("notices").textContent = "";
  showTab("generate");
}

// MARK: layout boxes

function drawBoxes() {
  const canvas = $("layout-canvas");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const all = state.drawing ? [...state.boxes, state.drawing] : state.boxes;
  all.forEach((b, k) => {
    const [x0, y0, x1, y1] = b.box.map((v) => v * canvas.width);
    g.strokeStyle = BOX_COLORS[k % BOX_COLORS.length];
    g.lineWidth = 2;
    g.strokeRect(x0, y0, x1 - x0, y1 - y0);
    g.fillStyle = g.strokeStyle;
    g.font = "12px sans-serif";
    g.fillText(b.phrase || `box ${k + 1}`, x0 + 3, y0 + 13);
  });
}

function listBoxes() {
  const list = $("box-list");
  list.replaceChildren();
  state.boxes.forEach((b, k) => {
    const item = document.createElement("li");
    const input = document.createElement("input");
    input.value = b.phrase;
    input.placeholder = "phrase, e.g. red circle";
    input.style.borderColor = BOX_COLORS[k % BOX_COLORS.length];
    input.addEventListener("input", () => { b.phrase = input.value; drawBoxes(); });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = "remove this box";
    remove.addEventListener("click", () => { state.boxes.splice(k, 1); listBoxes(); drawBoxes(); });
    item.append(input, remove);
    list.append(item);
  });
}

function canvasPoint(event) {
  const rect = $("layout-canvas").getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
}

function setUpCanvas() {
  const canvas = $("layout-canvas");
  let start = null;
  canvas.addEventListener("pointerdown", (event) => { start = canvasPoint(event); canvas.setPointerCapture(event.pointerId); });
  canvas.addEventListener("pointermove", (event) => {
    if (!start) return;
    const p = canvasPoint(event);
    state.drawing = { phrase: "", box: [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])] };
    drawBoxes();
  });
  canvas.addEventListener("pointerup", () => {
    const b = state.drawing;
    start = null;
    state.drawing = null;
    if (b && b.box[2] - b.box[0] > 0.02 && b.box[3] - b.box[1] > 0.02 && state.boxes.length < 16) {
      b.box = b.box.map((v) => Math.round(v * 1000) / 1000);
      state.boxes.push(b);
      listBoxes();
      const inputs = $("box-list").querySelectorAll("input");
      inputs[inputs.length - 1].focus();
    }
    drawBoxes();
  });
  $("clear-boxes").addEventListener("click", () => { state.boxes = []; listBoxes(); drawBoxes(); });
}

// MARK: video edit

const PHASES = { tuning: "Tuning on the clip", inversion: "Inverting", editing: "Editing", sampling: "Sampling" };

function setVideoStatus(text, isError = false) {
  $("video-status").textContent = text;
  $("video-status").classList.toggle("error", isError);
}

async function editVideo(event) {
  event.preventDefault();
  const file = $("video-file").files[0];
  if (!file) { setVideoStatus("Choose a clip.", true); return; }
  const query = new URLSearchParams({
    source_prompt: $("source-prompt").value.trim(),
    target_prompt: $("target-prompt").value.trim(),
    method: $("video-method").value,
    frames: $("video-frames").value,
    tune_steps: $("video-tune-steps").value,
    steps: $("video-steps").value,
    seed: $("video-seed").value,
  });
  $("video-edit").disabled = true;
  $("video-results").classList.add("hidden");
  setVideoStatus("Uploading…");
  try {
    const job = await api(`/api/edit-video?${query}`, {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
    followVideo(job);
  } catch (error) {
    setVideoStatus(error.message, true);
    $("video-edit").disabled = false;
  }
}

function followVideo(job) {
  state.videoJob = job.id;
  $("video-cancel").disabled = false;
  const finish = () => { state.videoJob = null; $("video-cancel").disabled = true; $("video-edit").disabled = false; };
  const show = (s) => {
    $("video-progress").max = s.total || 1;
    $("video-progress").value = s.completed;
    if (s.status === "queued") setVideoStatus(`Queued (${s.position} ahead)`);
    if (s.status === "running") setVideoStatus(`${PHASES[s.phase] || "Starting"}: ${s.completed} of ${s.total}`);
    if (s.status === "failed") setVideoStatus(`Failed: ${s.error}`, true);
    if (s.status === "cancelled") setVideoStatus("Cancelled.");
    if (s.status === "succeeded") { setVideoStatus(`Done in ${s.edit.seconds.toFixed(1)} s.`); showEdit(s.edit); }
  };
  show(job);
  const events = new EventSource(`/api/jobs/${job.id}/events`);
  events.onmessage = (message) => {
    const snapshot = JSON.parse(message.data);
    show(snapshot);
    if (["succeeded", "failed", "cancelled"].includes(snapshot.status)) { events.close(); finish(); }
  };
  events.onerror = () => { events.close(); api(`/api/jobs/${job.id}`).then(show).finally(finish); };
}

function showEdit(edit) {
  $("video-source").src = edit.source;
  $("video-edited").src = edit.edited;
  $("video-animation").src = edit.animation;
  const rows = [["frames", edit.frames], ["method", edit.options.method]];
  if (edit.scores) {
    rows.push(["CLIP-style text score", edit.scores.clip_text.toFixed(2)]);
    rows.push(["CLIP-style temporal consistency", edit.scores.clip_temporal.toFixed(4)]);
    rows.push(["structure (mask IoU with the source)", edit.scores.structure.toFixed(3)]);
    if (edit.scores.evaluator_text != null) rows.push(["frames the evaluator finds right", `${(100 * edit.scores.evaluator_text).toFixed(0)} %`]);
  }
  $("video-scores").replaceChildren(...rows.map(([name, value]) => {
    const row = document.createElement("tr");
    const a = document.createElement("td"), b = document.createElement("td");
    a.textContent = name;
    b.textContent = value;
    row.append(a, b);
    return row;
  }));
  $("video-results").classList.remove("hidden");
}

async function cancelVideo() {
  if (!state.videoJob) return;
  $("video-cancel").disabled = true;
  try { await api(`/api/jobs/${state.videoJob}/cancel`, { method: "POST" }); } catch (error) { setVideoStatus(error.message, true); }
}

// MARK: start

async function start() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  $("generate-form").addEventListener("submit", generate);
  $("cancel").addEventListener("click", cancel);
  $("video-form").addEventListener("submit", editVideo);
  $("video-cancel").addEventListener("click", cancelVideo);
  $("more-runs").addEventListener("click", () => loadGallery(false));
  setUpCanvas();
  try {
    const health = await api("/api/health");
    state.health = health;
    const size = health.output_size || health.sample_size;
  $("model-info").textContent = `model ${health.model} · ${size}×${size}` + (size !== health.sample_size ? ` (from ${health.sample_size}×${health.sample_size})` : "");
    $("sampler").replaceChildren(...health.samplers.map((name) => new Option(name, name)));
    $("steps").max = health.limits.max_steps;
    $("num-images").max = health.limits.max_images;
    $("video-frames").max = health.limits.max_frames;
    $("video-tune-steps").max = health.limits.max_tune_steps;
    $("video-steps").max = health.limits.max_steps;
    $("layout-mode-label").classList.toggle("hidden", !health.layout_prior);
    $("layout-details").classList.toggle("hidden", !health.layout_prior);
  } catch (error) {
    setStatus(`The server did not answer: ${error.message}`, true);
  }
}

start();
