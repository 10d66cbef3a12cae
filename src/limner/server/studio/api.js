// The studio's client of limner's native HTTP API (/api/v1/...).
//
// Every call goes through `request`, which adds the access token when one is set and
// turns any non-2xx answer into an ApiError carrying the server's own message, so the
// page can show the user what the server said rather than a status code.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// The message in an error body. limner's native routes answer {"detail": str}; the
// contract also allows {"error": {"message": str}} and FastAPI's list of problems.
export function errorMessage(status, body, text) {
  if (body && typeof body === "object") {
    const err = body.error;
    if (err && typeof err === "object" && typeof err.message === "string") return err.message;
    if (typeof err === "string" && typeof body.detail !== "string") return err;
    const detail = body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((d) => [(d.loc || []).filter((p) => p !== "body").join("."), d.msg].filter(Boolean).join(": "))
        .join("; ");
    }
  }
  if (text && text.trim() && text.length < 500 && !text.trimStart().startsWith("<")) return text.trim();
  if (status === 401) return "the server needs an access token";
  if (status === 413) return "the request is too large for the server";
  return `the server answered ${status}`;
}

// Split a text/event-stream buffer into complete events and the unfinished rest.
// Returns {events: [parsed JSON of each event's data], rest: string}.
export function parseSse(buffer) {
  const events = [];
  const normalised = buffer.replace(/\r\n?/g, "\n");
  const blocks = normalised.split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const data = block
      .split("\n")
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).replace(/^ /, ""))
      .join("\n");
    if (!data) continue; // a comment (keep-alive) or a field we do not use
    try {
      events.push(JSON.parse(data));
    } catch {
      // not JSON: not one of ours; skip it rather than stop the stream
    }
  }
  return { events, rest };
}

export function createClient({ getToken = () => null } = {}) {
  function headers(extra = {}) {
    const token = getToken();
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  async function request(method, path, body) {
    const init = { method, headers: headers(), credentials: "same-origin" };
    if (body !== undefined) {
      init.headers = headers({ "Content-Type": "application/json" });
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `cannot reach the server (${err.message})`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, parsed, text));
    return parsed;
  }

  // An URL an <img> can show. Without a token the route itself; with one, the bytes are
  // fetched with the header (an <img> cannot send it) and shown from a blob: URL.
  async function imageSrc(path) {
    if (!getToken()) return path;
    const response = await fetch(path, { headers: headers() });
    if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, null, ""));
    return URL.createObjectURL(await response.blob());
  }

  // Follow /api/v1/events until `signal` aborts; `onEvent` gets each parsed event.
  // Resolves when the stream ends (the caller reconnects), rejects on a network error.
  async function streamEvents(onEvent, signal) {
    const response = await fetch("/api/v1/events", {
      headers: headers({ Accept: "text/event-stream" }),
      signal,
      cache: "no-store",
    });
    if (!response.ok || !response.body) {
      const text = await response.text().catch(() => "");
      let parsed = null;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
      throw new ApiError(response.status, errorMessage(response.status, parsed, text));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const { events, rest } = parseSse(buffer);
      buffer = rest;
      for (const event of events) onEvent(event);
    }
  }

  const q = (params) => {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  };
  const id = (value) => encodeURIComponent(value);

  return {
    health: () => request("GET", "/api/v1/health"),
    models: () => request("GET", "/api/v1/models"),
    samplers: () => request("GET", "/api/v1/samplers"),
    submitJob: (req, priority = 0) => request("POST", "/api/v1/jobs", { request: req, priority }),
    job: (jobId) => request("GET", `/api/v1/jobs/${id(jobId)}`),
    jobs: (params = {}) => request("GET", `/api/v1/jobs${q(params)}`),
    cancelJob: (jobId) => request("POST", `/api/v1/jobs/${id(jobId)}/cancel`),
    images: (params = {}) => request("GET", `/api/v1/images${q(params)}`),
    image: (imageId) => request("GET", `/api/v1/images/${id(imageId)}`),
    deleteImage: (imageId) => request("DELETE", `/api/v1/images/${id(imageId)}`),
    imageFileUrl: (imageId) => `/api/v1/images/${id(imageId)}/file`,
    imageSrc,
    streamEvents,
  };
}
