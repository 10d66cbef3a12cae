// The generation form as data: values read from the controls become a GenerationRequest
// (limner.requests) body, and a stored request becomes values for the controls.
// Pure functions only; the page wires them to the DOM.

export const MODES = ["txt2img", "img2img", "inpaint", "outpaint"];
export const OUTPAINT_SIDES = ["left", "right", "up", "down"];
export const RANDOM_SEED = -1;

function integer(text) {
  return Math.trunc(Number(text));
}

function optionalInteger(text) {
  const trimmed = String(text ?? "").trim();
  return trimmed === "" ? null : integer(trimmed);
}

// A side length the request accepts (a multiple of 8, 64..4096) close to `pixels`.
export function fitToGrid(pixels) {
  return Math.max(64, Math.min(4096, Math.floor(pixels / 8) * 8));
}

// The size of the picture after outpainting `width` x `height` by `sides`.
export function outpaintSize(width, height, sides) {
  return {
    width: width + (sides.left || 0) + (sides.right || 0),
    height: height + (sides.up || 0) + (sides.down || 0),
  };
}

// Form values (strings, as the controls hold them) and the input images (base64 data
// URLs or "image:<id>") -> the body of a GenerationRequest.
export function buildRequest(values, inputs = {}) {
  const mode = MODES.includes(values.mode) ? values.mode : "txt2img";
  const request = {
    mode,
    prompt: values.prompt ?? "",
    negative_prompt: values.negative_prompt ?? "",
    model: values.model || null,
    sampler: values.sampler,
    schedule: values.schedule || null,
    steps: integer(values.steps),
    guidance_scale: Number(values.guidance_scale),
    width: optionalInteger(values.width),
    height: optionalInteger(values.height),
    seed: integer(values.seed),
    batch_size: integer(values.batch_size),
    batch_count: integer(values.batch_count),
  };
  if (mode !== "txt2img") {
    request.init_image = inputs.init_image ?? null;
    request.strength = Number(values.strength);
  }
  if (mode === "inpaint") {
    request.mask = inputs.mask ?? null;
    request.mask_blur = integer(values.mask_blur);
  }
  if (mode === "outpaint") {
    // The new size follows from the input image and the sides; the server computes it.
    request.width = null;
    request.height = null;
    request.outpaint = Object.fromEntries(
      OUTPAINT_SIDES.map((side) => [side, integer(values.outpaint?.[side] ?? 0)]),
    );
  }
  return request;
}

// A stored request (an image's or a job's) -> the values "use these parameters again"
// puts into the form. One image is reproduced by its own seed, so batch size and count
// go back to 1; the mode and the input images stay as the user has them.
export function valuesFromRequest(request) {
  const values = {
    prompt: request.prompt ?? "",
    negative_prompt: request.negative_prompt ?? "",
    model: request.model ?? "builtin",
    sampler: request.sampler,
    schedule: request.schedule ?? "",
    steps: String(request.steps),
    guidance_scale: String(request.guidance_scale),
    width: request.width == null ? "" : String(request.width),
    height: request.height == null ? "" : String(request.height),
    seed: String(request.seed ?? RANDOM_SEED),
    batch_size: "1",
    batch_count: "1",
  };
  if (request.strength != null) values.strength = String(request.strength);
  if (request.mask_blur != null) values.mask_blur = String(request.mask_blur);
  if (request.outpaint) {
    values.outpaint = Object.fromEntries(
      OUTPAINT_SIDES.map((side) => [side, String(request.outpaint[side] ?? 0)]),
    );
  }
  return values;
}

// "12.3 s", "2 min 5 s": an ETA for people.
export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}
