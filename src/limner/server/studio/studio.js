// limner studio: the page's wiring. The form, the job list fed by the server's event
// stream, the result viewer and the gallery, over limner's native API (api.js).

import { ApiError, createClient } from "./api.js";
import {
  buildRequest,
  fitToGrid,
  formatSeconds,
  OUTPAINT_SIDES,
  outpaintSize,
  RANDOM_SEED,
  valuesFromRequest,
} from "./form.js";
import { MaskEditor } from "./mask.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "limner-token";
const GALLERY_PAGE = 24;
const POLL_MS = 3000;
const MAX_FINISHED_JOBS = 12;
const DEFAULT_SAMPLER = "DPM++ 2M";

const state = {
  jobs: new Map(), // job id -> {job, row, handled, ours}
  followed: null, // the job whose live previews the viewer shows
  shown: null, // the gallery image in the viewer
  lastSeed: null, // the seed of the newest image this page has shown
  init: null, // {value: data URL or "image:<id>", label}
  gallery: { q: "", items: [], total: 0, loading: 0 },
};

const api = createClient({ getToken: () => sessionStorage.getItem(TOKEN_KEY) });
const form = $("generate-form");
const mask = new MaskEditor({
  stage: $("stage"),
  imageCanvas: $("stage-image"),
  maskCanvas: $("stage-mask"),
  cursor: $("brush-cursor"),
});

// -- messages ---------------------------------------------------------------------------

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

function reportFailure(what, err) {
  if (err instanceof ApiError && err.status === 401) {
    $("auth-panel").hidden = false;
    $("auth-token").focus();
  }
  showError(`${what}: ${err.message}`);
}

// -- server information -----------------------------------------------------------------

function fillSelect(select, options, selected) {
  select.replaceChildren(
    ...options.map(({ value, label, title }) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      if (title) option.title = title;
      return option;
    }),
  );
  if (selected !== undefined && options.some((o) => o.value === selected)) select.value = selected;
}

function selectValue(select, value) {
  if (![...select.options].some((o) => o.value === value)) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = `${value || "default"} (not listed)`;
    select.append(option);
  }
  select.value = value;
}

async function loadServerInfo() {
  try {
    const health = await api.health();
    $("server-status").textContent = "Connected";
    $("version").textContent = `limner ${health.version ?? ""}`;
  } catch (err) {
    $("server-status").textContent = "Server unreachable";
    reportFailure("Cannot reach the server", err);
    return false;
  }
  try {
    const [models, samplers] = await Promise.all([api.models(), api.samplers()]);
    fillSelect(
      $("model"),
      models.models.map((m) => ({ value: m.name, label: m.name, title: m.architecture })),
      models.default ?? "builtin",
    );
    const samplerNames = samplers.samplers.map((s) => (typeof s === "string" ? s : s.name));
    fillSelect($("sampler"), samplerNames.map((s) => ({ value: s, label: s })), DEFAULT_SAMPLER);
    const schedules = (samplers.schedules ?? []).map((s) => (typeof s === "string" ? s : s.name));
    const scheduleOptions = schedules.map((s) => ({ value: s, label: s }));
    if (!schedules.includes("Automatic")) scheduleOptions.unshift({ value: "", label: "Sampler's default" });
    fillSelect($("schedule"), scheduleOptions, schedules.includes("Automatic") ? "Automatic" : "");
  } catch (err) {
    reportFailure("Cannot list models and samplers", err);
    return false;
  }
  return true;
}

// -- the form ---------------------------------------------------------------------------

function currentMode() {
  return form.elements.mode.value;
}

function setMode(mode) {
  const radio = form.querySelector(`input[name="mode"][value="${mode}"]`);
  if (radio) radio.checked = true;
  $("input-section").hidden = mode === "txt2img";
  $("mask-tools").hidden = mode !== "inpaint";
  $("outpaint-tools").hidden = mode !== "outpaint";
  // Outpainting's size is the input image's plus the sides.
  for (const id of ["width", "height"]) $(id).disabled = mode === "outpaint";
  mask.setMode(mode);
  updateOutpaintSize();
}

function readValues() {
  const el = form.elements;
  return {
    mode: currentMode(),
    prompt: el.prompt.value,
    negative_prompt: el.negative_prompt.value,
    model: el.model.value,
    sampler: el.sampler.value,
    schedule: el.schedule.value,
    steps: el.steps.value,
    guidance_scale: el.guidance_scale.value,
    width: el.width.value,
    height: el.height.value,
    seed: el.seed.value,
    batch_size: el.batch_size.value,
    batch_count: el.batch_count.value,
    strength: el.strength.value,
    mask_blur: el.mask_blur.value,
    outpaint: Object.fromEntries(OUTPAINT_SIDES.map((s) => [s, $(`outpaint-${s}`).value])),
  };
}

function applyValues(values) {
  const el = form.elements;
  for (const name of ["prompt", "negative_prompt", "steps", "guidance_scale", "width", "height", "seed", "batch_size", "batch_count", "mask_blur"]) {
    if (values[name] !== undefined) el[name].value = values[name];
  }
  if (values.model !== undefined) selectValue(el.model, values.model);
  if (values.sampler !== undefined) selectValue(el.sampler, values.sampler);
  if (values.schedule !== undefined) {
    const schedule = values.schedule || ([...el.schedule.options].some((o) => o.value === "Automatic") ? "Automatic" : "");
    selectValue(el.schedule, schedule);
  }
  if (values.strength !== undefined) {
    el.strength.value = values.strength;
    $("strength-value").textContent = Number(values.strength).toFixed(2);
  }
  if (values.outpaint) {
    for (const side of OUTPAINT_SIDES) $(`outpaint-${side}`).value = values.outpaint[side];
    updateOutpaintSize();
  }
}

function labelOf(control) {
  const label = control.id ? form.querySelector(`label[for="${control.id}"]`) : null;
  return (label?.textContent || control.name || "a value").trim();
}

// The browser's own constraint checks (min, max, step) on the controls in view.
function firstInvalidControl() {
  for (const control of form.elements) {
    if (!control.willValidate || control.closest("[hidden]")) continue;
    if (!control.checkValidity()) return control;
  }
  return null;
}

function outpaintSides() {
  return Object.fromEntries(OUTPAINT_SIDES.map((s) => [s, Math.trunc(Number($(`outpaint-${s}`).value) || 0)]));
}

function updateOutpaintSize() {
  const sides = outpaintSides();
  mask.setOutpaint(sides);
  if (!mask.hasImage) {
    $("outpaint-size").textContent = "";
    return;
  }
  const { width, height } = outpaintSize($("stage-mask").width, $("stage-mask").height, sides);
  $("outpaint-size").textContent = `New size: ${width} × ${height} pixels`;
}

async function generate() {
  clearError();
  const invalid = firstInvalidControl();
  if (invalid) {
    showError(`${labelOf(invalid)}: ${invalid.validationMessage}`);
    invalid.focus();
    return;
  }
  const mode = currentMode();
  if (mode !== "txt2img" && !state.init) {
    showError("Choose an input image first: upload one, or use one from the gallery.");
    $("init-file").focus();
    return;
  }
  const inputs = {};
  if (state.init) inputs.init_image = state.init.value;
  if (mode === "inpaint") {
    if (mask.isEmpty()) {
      showError("Paint the area to repaint on the mask first (or use Fill mask).");
      $("stage-mask").focus();
      return;
    }
    inputs.mask = mask.toPngDataUrl();
  }
  if (mode === "outpaint" && !Object.values(outpaintSides()).some((v) => v > 0)) {
    showError("Give at least one side to extend the canvas by.");
    $("outpaint-left").focus();
    return;
  }
  const request = buildRequest(readValues(), inputs);
  const button = $("generate");
  button.disabled = true;
  try {
    const job = await api.submitJob(request);
    state.followed = job.id;
    trackJob(job, { ours: true });
  } catch (err) {
    reportFailure("The job was not accepted", err);
  } finally {
    button.disabled = false;
  }
}

// -- input image ------------------------------------------------------------------------

function decodeImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the browser cannot read this image"));
    image.src = src;
  });
}

function readFileAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// PNG and JPEG go to the server as they are; other formats as a PNG of their pixels.
function asPngDataUrl(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  canvas.getContext("2d").drawImage(image, 0, 0);
  return canvas.toDataURL("image/png");
}

function setInit(image, value, label) {
  state.init = { value, label };
  mask.setImage(image);
  $("init-source").textContent = `Input: ${label} (${image.naturalWidth} × ${image.naturalHeight})`;
  if (currentMode() !== "outpaint") {
    $("width").value = fitToGrid(image.naturalWidth);
    $("height").value = fitToGrid(image.naturalHeight);
  }
  updateOutpaintSize();
}

async function onFileChosen() {
  const file = $("init-file").files[0];
  if (!file) return;
  clearError();
  try {
    let dataUrl = await readFileAsDataUrl(file);
    const image = await decodeImage(dataUrl);
    if (!/^image\/(png|jpeg)$/.test(file.type)) dataUrl = asPngDataUrl(image);
    setInit(image, dataUrl, file.name);
  } catch (err) {
    showError(`Cannot use ${file.name}: ${err.message}`);
  }
}

async function useAsInput(record) {
  clearError();
  try {
    const image = await decodeImage(await api.imageSrc(api.imageFileUrl(record.id)));
    if (currentMode() === "txt2img") setMode("img2img");
    setInit(image, `image:${record.id}`, `gallery image ${record.id}`);
    $("input-section").scrollIntoView({ block: "nearest" });
    $("init-file").focus();
  } catch (err) {
    reportFailure("Cannot load the image", err);
  }
}

// -- jobs -------------------------------------------------------------------------------

function jobRow(job) {
  const row = document.createElement("li");
  row.className = "job";
  row.dataset.jobId = job.id;
  row.innerHTML = `
    <img class="job-preview" alt="" hidden>
    <div class="job-body">
      <p class="job-title"></p>
      <progress class="job-progress" max="1" value="0"></progress>
      <p class="job-status"></p>
      <p class="job-error" hidden></p>
    </div>
    <button type="button" class="job-cancel">Cancel</button>`;
  const prompt = job.request?.prompt || "(no prompt)";
  row.querySelector(".job-title").textContent = `${job.request?.mode ?? "job"}: ${prompt}`;
  row.querySelector(".job-progress").setAttribute("aria-label", `Progress of “${prompt.slice(0, 60)}”`);
  row.querySelector(".job-cancel").setAttribute("aria-label", `Cancel “${prompt.slice(0, 60)}”`);
  row.querySelector(".job-cancel").addEventListener("click", () => cancelJob(job.id));
  row.dataset.progressEvents = "0";
  return row;
}

function trackJob(job, { ours = false } = {}) {
  let entry = state.jobs.get(job.id);
  if (!entry) {
    entry = { job, row: jobRow(job), handled: false, ours };
    state.jobs.set(job.id, entry);
    $("job-list").prepend(entry.row);
    $("jobs-empty").hidden = true;
    pruneFinishedJobs();
  }
  // The job's events can arrive before the answer to our own POST, even all of them: a
  // job already finished is then shown as ours once we know it is.
  applyJob(job);
  if (ours && !entry.ours) {
    entry.ours = true;
    if (entry.handled) onJobFinished(entry);
  }
  return entry;
}

function pruneFinishedJobs() {
  const finished = [...state.jobs.values()].filter((e) => e.handled);
  for (const entry of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED_JOBS))) {
    entry.row.remove();
    state.jobs.delete(entry.job.id);
  }
}

const FINAL = new Set(["completed", "failed", "cancelled"]);

function statusText(status, attempts) {
  const again = attempts > 1 && status === "running" ? " (second attempt)" : "";
  return { queued: "Queued", running: "Running", completed: "Done", failed: "Failed", cancelled: "Cancelled" }[status] + again;
}

// A job as the server reports it (from GET or from a status event); idempotent.
function applyJob(update) {
  const entry = state.jobs.get(update.id ?? update.job_id);
  if (!entry) return;
  // Answers and events can arrive out of order (the POST's "queued" after the job's own
  // "completed", a cancel's "running" after "cancelled"): a finished job never goes back.
  if (FINAL.has(entry.job.status) && !FINAL.has(update.status)) return;
  const job = { ...entry.job, ...update, id: entry.job.id };
  entry.job = job;
  const row = entry.row;
  row.dataset.status = job.status;
  const final = FINAL.has(job.status);
  const progress = row.querySelector(".job-progress");
  if (job.status === "completed") progress.value = 1;
  else if (typeof job.progress === "number") progress.value = job.progress;
  const statusLine = row.querySelector(".job-status");
  // While running, the step line of the progress events says more than "Running".
  if (job.status !== "running" || !statusLine.textContent.startsWith("Step")) {
    statusLine.textContent = statusText(job.status, job.attempts ?? 0);
  }
  row.querySelector(".job-cancel").hidden = final;
  if (job.status === "failed") {
    const error = row.querySelector(".job-error");
    error.hidden = false;
    error.textContent = job.error || "the job failed";
  }
  if (final && !entry.handled) {
    entry.handled = true;
    onJobFinished(entry);
  }
}

function applyProgress(event) {
  const entry = state.jobs.get(event.job_id);
  if (!entry || entry.handled) return;
  const row = entry.row;
  row.dataset.status = "running";
  row.dataset.progressEvents = String(Number(row.dataset.progressEvents) + 1);
  row.querySelector(".job-progress").value = event.progress ?? 0;
  const eta = formatSeconds(event.eta_s ?? event.eta_seconds);
  const batch = event.batch_count > 1 ? `, batch ${event.batch + 1} of ${event.batch_count}` : "";
  row.querySelector(".job-status").textContent = `Step ${event.step} of ${event.total}${batch}${eta ? `, about ${eta} left` : ""}`;
  if (event.preview) {
    const src = event.preview.startsWith("data:") ? event.preview : `data:image/png;base64,${event.preview}`;
    const preview = row.querySelector(".job-preview");
    preview.src = src;
    preview.alt = "Live preview";
    preview.hidden = false;
    if (state.followed === event.job_id) showPreview(src);
  }
}

async function onJobFinished(entry) {
  const job = entry.job;
  if (job.status === "failed" && entry.ours) showError(`The job failed: ${job.error || "no reason given"}`);
  if (job.status !== "completed") {
    if (state.followed === job.id && state.shown) showImage(state.shown);
    return;
  }
  await loadGallery();
  const first = (job.image_ids ?? [])[0];
  if (first && (entry.ours || state.followed === job.id)) {
    try {
      showImage(await api.image(first));
    } catch (err) {
      reportFailure("Cannot show the new image", err);
    }
  }
}

async function cancelJob(jobId) {
  try {
    const job = await api.cancelJob(jobId);
    applyJob(job);
  } catch (err) {
    reportFailure("Cannot cancel the job", err);
  }
}

async function onEvent(event) {
  if (!event || !event.job_id) return;
  if (!state.jobs.has(event.job_id)) {
    if (event.final) return; // a job this page never saw, already over
    try {
      trackJob(await api.job(event.job_id));
    } catch {
      return;
    }
  }
  if (event.type === "progress") applyProgress(event);
  else if (event.type === "status") applyJob({ ...event, id: event.job_id });
}

let reconnectEvents = () => {};

// Follow the event stream for as long as the page is open, reconnecting with a growing
// pause; `reconnectEvents()` cuts the pause short (after a token was given).
async function followEvents() {
  let delay = 1000;
  for (;;) {
    try {
      await api.streamEvents((event) => {
        delay = 1000;
        onEvent(event);
      }, new AbortController().signal);
    } catch {
      // The server is away, or wants a token the page has not been given yet: try
      // again after the pause.
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, delay);
      reconnectEvents = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    delay = Math.min(delay * 2, 10000);
  }
}

// The event stream may drop events for a slow page; the job routes are the truth.
async function pollJobs() {
  const open = [...state.jobs.values()].filter((e) => !e.handled);
  for (const entry of open) {
    try {
      applyJob(await api.job(entry.job.id));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        entry.handled = true;
        entry.row.remove();
        state.jobs.delete(entry.job.id);
      }
    }
  }
}

async function loadOpenJobs() {
  try {
    const { jobs } = await api.jobs({ status: "queued,running", limit: 50 });
    for (const job of jobs.reverse()) trackJob(job);
  } catch (err) {
    reportFailure("Cannot list the jobs", err);
  }
}

// Images fetched with a token are shown from blob: URLs, which live until released.
function releaseBlob(url) {
  if (url && url.startsWith("blob:")) URL.revokeObjectURL(url);
}

// -- viewer -----------------------------------------------------------------------------

function showPreview(src) {
  const img = $("viewer-image");
  img.src = src;
  img.alt = "Live preview of the running job";
  img.classList.add("previewing");
  img.hidden = false;
  $("viewer-empty").hidden = true;
}

async function showImage(record) {
  let src;
  try {
    src = await api.imageSrc(record.url ?? api.imageFileUrl(record.id));
  } catch (err) {
    reportFailure("Cannot load the image", err);
    return;
  }
  state.shown = record;
  state.lastSeed = record.seed;
  const img = $("viewer-image");
  img.classList.remove("previewing");
  releaseBlob(img.src);
  img.src = src;
  img.dataset.imageId = record.id;
  img.alt = record.prompt ? `Generated: ${record.prompt}` : "Generated image";
  img.hidden = false;
  $("viewer-empty").hidden = true;
  $("viewer-caption").textContent = `Seed ${record.seed} · ${record.width} × ${record.height}`;
  $("viewer-infotext").textContent = record.infotext ?? "";
  $("viewer-details").hidden = false;
  $("viewer-actions").hidden = false;
  $("download").href = src;
  $("download").download = `limner-${record.id}.png`;
  resetDeleteButton();
}

function clearViewer() {
  state.shown = null;
  const img = $("viewer-image");
  releaseBlob(img.src);
  img.hidden = true;
  img.removeAttribute("src");
  delete img.dataset.imageId;
  $("viewer-empty").hidden = false;
  $("viewer-caption").textContent = "";
  $("viewer-details").hidden = true;
  $("viewer-actions").hidden = true;
}

let deleteArmed = null;

function resetDeleteButton() {
  clearTimeout(deleteArmed);
  deleteArmed = null;
  $("delete-image").textContent = "Delete";
}

// Two presses: the first arms the button for a few seconds, the second deletes.
async function onDelete() {
  const record = state.shown;
  if (!record) return;
  if (deleteArmed === null) {
    $("delete-image").textContent = "Press again to delete";
    deleteArmed = setTimeout(resetDeleteButton, 4000);
    return;
  }
  resetDeleteButton();
  try {
    await api.deleteImage(record.id);
    clearViewer();
    await loadGallery();
  } catch (err) {
    reportFailure("Cannot delete the image", err);
  }
}

function onUseParameters() {
  const request = state.shown?.request;
  if (!request) return;
  applyValues(valuesFromRequest(request));
  $("prompt").focus();
}

// -- gallery ----------------------------------------------------------------------------

function galleryItem(record) {
  const item = document.createElement("li");
  item.dataset.imageId = record.id;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.title = record.prompt || "(no prompt)";
  button.setAttribute("aria-label", `Show image: ${record.prompt || "no prompt"}, seed ${record.seed}`);
  const img = document.createElement("img");
  img.alt = "";
  img.loading = "lazy";
  img.width = record.width;
  img.height = record.height;
  api.imageSrc(record.url ?? api.imageFileUrl(record.id)).then((src) => (img.src = src), () => {});
  button.append(img);
  button.addEventListener("click", () => showImage(record));
  item.append(button);
  return item;
}

// The first page (reset) or the next one of the gallery, newest first.
async function loadGallery({ more = false } = {}) {
  const gallery = state.gallery;
  const ticket = ++gallery.loading;
  const offset = more ? gallery.items.length : 0;
  try {
    const page = await api.images({ q: gallery.q, limit: GALLERY_PAGE, offset });
    if (ticket !== gallery.loading) return; // a newer search has started
    gallery.items = more ? gallery.items.concat(page.images) : page.images;
    gallery.total = page.total;
    const grid = $("gallery-grid");
    if (more) grid.append(...page.images.map(galleryItem));
    else {
      for (const img of grid.querySelectorAll("img")) releaseBlob(img.src);
      grid.replaceChildren(...page.images.map(galleryItem));
    }
    $("gallery-more").hidden = gallery.items.length >= gallery.total;
    const what = gallery.q ? ` matching “${gallery.q}”` : "";
    $("gallery-count").textContent = gallery.total
      ? `${gallery.total} image${gallery.total === 1 ? "" : "s"}${what}`
      : `No images${what} yet.`;
  } catch (err) {
    reportFailure("Cannot list the gallery", err);
  }
}

// -- start ------------------------------------------------------------------------------

function bind() {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      generate();
    }
  });
  for (const radio of form.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  $("seed-random").addEventListener("click", () => {
    $("seed").value = RANDOM_SEED;
  });
  $("seed-reuse").addEventListener("click", () => {
    if (state.lastSeed === null) showError("There is no image yet whose seed could be reused.");
    else $("seed").value = state.lastSeed;
  });
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
  $("brush-size").addEventListener("input", () => {
    mask.size = Number($("brush-size").value);
    $("brush-size-value").textContent = $("brush-size").value;
  });
  for (const radio of form.querySelectorAll('input[name="mask-tool"]')) {
    radio.addEventListener("change", () => (mask.tool = radio.value));
  }
  $("mask-clear").addEventListener("click", () => mask.clear());
  $("mask-fill").addEventListener("click", () => mask.fill());
  $("mask-invert").addEventListener("click", () => mask.invert());
  for (const side of OUTPAINT_SIDES) $(`outpaint-${side}`).addEventListener("input", updateOutpaintSize);
  $("init-file").addEventListener("change", onFileChosen);
  $("error-dismiss").addEventListener("click", clearError);
  $("use-params").addEventListener("click", onUseParameters);
  $("use-input").addEventListener("click", () => state.shown && useAsInput(state.shown));
  $("delete-image").addEventListener("click", onDelete);
  $("gallery-more").addEventListener("click", () => loadGallery({ more: true }));
  let searchTimer = null;
  $("gallery-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.gallery.q = $("gallery-search").value.trim();
      loadGallery();
    }, 250);
  });
  $("auth-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("auth-token").value);
    $("auth-panel").hidden = true;
    clearError();
    reconnectEvents();
    await start();
  });
}

async function start() {
  if (!(await loadServerInfo())) return;
  await Promise.all([loadOpenJobs(), loadGallery()]);
  document.body.dataset.ready = "true";
}

bind();
setMode(currentMode());
start();
followEvents();
setInterval(pollJobs, POLL_MS);
