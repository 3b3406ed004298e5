// The page's way to the API: JSON calls and one server-sent-event stream, each carrying
// the key in the Authorization header (never in a URL, so never in a log).

const KEY = "rayvisor.key";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status; // 0: the API did not answer at all
    this.problem = problem;
  }
}

export const keyStore = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** One JSON call; throws ApiError (status 0 when the network failed). */
export async function call(method, path, body) {
  const headers = { Accept: "application/json, application/problem+json" };
  const key = keyStore.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, { title: "API unreachable", detail: String(error) });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { title: response.statusText, detail: text.slice(0, 300) };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});
export const del = (path) => call("DELETE", path);

/**
 * Server-sent events read with fetch() (EventSource cannot send a header). Reconnects
 * with exponential backoff and jitter, resuming with `Last-Event-ID` after the last
 * durable event seen; reports its state to `onState(state, info)`:
 * `connecting`, `live` (info.resumedFrom: the id it resumed after, or null),
 * `reconnecting` (info.delayMs, info.attempt, info.reason), `denied` (info.status).
 */
export class EventStream {
  constructor(path, { onEvent, onState, idleTimeoutMs = 45000 }) {
    this.path = path;
    this.onEvent = onEvent;
    this.onState = onState;
    this.idleTimeoutMs = idleTimeoutMs;
    this.lastEventId = null;
    this.stopped = false;
    this.controller = null;
    this.abortReason = undefined;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  /** Drop the connection and connect again (say, calls fail: the stream is likely stale). */
  reconnect(reason) {
    if (this.controller && !this.controller.signal.aborted) {
      this.abortReason = reason;
      this.controller.abort();
    }
  }

  async run() {
    let attempt = 0;
    while (!this.stopped) {
      this.onState(attempt ? "reconnecting" : "connecting", { attempt });
      let reason;
      try {
        const status = await this.readOnce(() => {
          attempt = 0;
        });
        if (status === 401 || status === 403) {
          this.onState("denied", { status });
          return;
        }
        reason = status ? `HTTP ${status}` : "stream ended";
      } catch (error) {
        if (this.stopped) return;
        reason = error?.name === "AbortError" ? this.abortReason ?? "stream went quiet" : String(error);
        this.abortReason = undefined;
      }
      attempt += 1;
      const delayMs = Math.round(Math.min(30000, 500 * 2 ** (attempt - 1)) * (0.8 + 0.4 * Math.random()));
      this.onState("reconnecting", { attempt, delayMs, reason });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  /** One connection until it ends; the HTTP status if refused, else undefined. */
  async readOnce(onOpen) {
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${keyStore.get()}` };
    const resumedFrom = this.lastEventId;
    if (resumedFrom !== null) headers["Last-Event-ID"] = resumedFrom;
    let idle = setTimeout(() => controller.abort(), this.idleTimeoutMs);
    try {
      const response = await fetch(this.path, { headers, signal: controller.signal, cache: "no-store" });
      if (!response.ok) return response.status;
      onOpen();
      this.onState("live", { resumedFrom });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = { data: [], event: "message", id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return undefined;
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(), this.idleTimeoutMs);
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) this.dispatch(event);
            event = { data: [], event: "message", id: null };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "data") event.data.push(text);
            else if (field === "event") event.event = text;
            else if (field === "id") event.id = text;
          }
        }
      }
    } finally {
      clearTimeout(idle);
    }
  }

  dispatch(event) {
    if (event.id) this.lastEventId = event.id;
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    this.onEvent(event.event, data, event.id);
  }
}
