// The live page: asks for a key, then keeps the tree, agents, tasks, projects,
// discoveries and metrics current from one event stream (and slow polls as a net).

import { ApiError, EventStream, get, keyStore, post } from "./api.js";
import {
  act, addDiscovery, loadDiscoveries, loadTemplates, openTask, patchRestart, refreshAgents,
  refreshDetail, refreshKeys, refreshMetrics, refreshProjects, refreshTasks, refreshTree, renderAgents,
} from "./panels.js";
import { repeat } from "./schedule.js";
import { $, can, hooks, loops, state } from "./state.js";
import { TASK_STATUSES, h, taskRow } from "./views.js";

// ---- signing in and out ----------------------------------------------------------------

function showLogin(message) {
  stopAll();
  $("dashboard").hidden = true;
  $("detail").hidden = true;
  $("signout").hidden = true;
  $("whoami").textContent = "";
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message ?? "";
  setConn("denied", message ? "key refused" : "no key");
}

function refusal(error) {
  if (error.status === 429) return `Too many requests (429): ${error.message}. Try again shortly.`;
  if (error.status === 401) return `The key was refused (401): ${error.message}. Enter a valid API key.`;
  return `The key is not allowed to read (403): ${error.message}.`;
}

async function signIn(key, attempt = 0) {
  keyStore.set(key);
  setConn("connecting", "checking key…");
  try {
    state.me = await get("/api/v1/me");
  } catch (error) {
    if (error.status === 401 || error.status === 403 || error.status === 429) {
      keyStore.clear();
      showLogin(refusal(error));
      return;
    }
    const delayMs = Math.min(30000, 1000 * 2 ** attempt);
    showBanner(`API unreachable (${error.message}): trying again in ${delayMs / 1000} s`);
    setTimeout(() => signIn(key, attempt + 1), delayMs);
    return;
  }
  showBanner(null);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("signout").hidden = false;
  $("whoami").textContent = `key ${state.me.name} (${state.me.prefix}) · ${state.me.scopes.join(", ")}`;
  document.body.classList.toggle("can-write", can("write"));
  document.body.classList.toggle("can-admin", can("admin"));
  startAll();
}

/** Any call refused for the key itself (401) ends the session: the key is gone. */
function onError(error, where) {
  if (error instanceof ApiError && error.status === 401) {
    keyStore.clear();
    showLogin(refusal(error));
    return true;
  }
  console.warn(where, error);
  return false;
}

// ---- connection state ----------------------------------------------------------------

function setConn(name, text) {
  $("conn").dataset.state = name;
  $("conn").textContent = text;
}

function showBanner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text ?? "";
}

function updateBanner() {
  const s = state.streamState;
  if (s.name === "reconnecting") {
    const when = s.delayMs === undefined ? "now" : `in ${(s.delayMs / 1000).toFixed(1)} s`;
    showBanner(`Event stream down${s.reason ? ` (${s.reason})` : ""}: reconnecting ${when}, attempt ${s.attempt}`);
  } else if (state.failing.size) {
    const [name, error] = [...state.failing][0];
    showBanner(`API unreachable for ${name} (${error.message}): retrying with backoff`);
  } else {
    showBanner(null);
  }
}

function onStreamState(name, info) {
  state.streamState = { name, ...info };
  if (name === "live") {
    if (info.resumedFrom !== null) {
      setConn("resumed", `live · resumed after event #${info.resumedFrom}`);
      refreshEverything(); // what polls missed while down
    } else {
      setConn("live", "live");
    }
  } else if (name === "reconnecting") {
    setConn("reconnecting", info.delayMs !== undefined ? `reconnecting in ${(info.delayMs / 1000).toFixed(1)} s` : "reconnecting…");
  } else if (name === "denied") {
    if (info.status === 401) {
      keyStore.clear();
      showLogin(`The key was refused (401) by the event stream. Enter a valid API key.`);
      return;
    }
    setConn("denied", `stream refused (${info.status})`);
  } else {
    setConn(name, "connecting…");
  }
  updateBanner();
}

// ---- loops -------------------------------------------------------------------------------

/** `fn` every `periodMs`, backing off while the API does not answer it (`schedule.js`). */
function every(name, periodMs, fn) {
  const loop = repeat(periodMs, fn, {
    ok: () => {
      if (state.failing.delete(name)) updateBanner();
    },
    failed: (error) => {
      if (onError(error, name)) return false;
      if (error.status === 0 || error.status >= 500) {
        state.failing.set(name, error);
        updateBanner();
      }
      if (error.status === 0) state.stream?.reconnect("API unreachable");
      return error.status === 0 || error.status === 429 || error.status >= 500;
    },
  });
  state.loops.push(loop);
  return loop;
}

function startAll() {
  stopAll();
  loops.tree = every("the tree", 5000, refreshTree);
  loops.metrics = every("metrics", 2000, refreshMetrics);
  loops.agents = every("agents", 10000, refreshAgents);
  loops.tasks = every("tasks", 10000, refreshTasks);
  loops.projects = every("projects", 15000, refreshProjects);
  loops.detail = every("the detail", 10000, refreshDetail);
  if (can("admin")) loops.keys = every("keys", 30000, refreshKeys);
  loadTemplates();
  loadDiscoveries();
  state.stream = new EventStream("/api/v1/events/stream?subject=%3E", { onEvent, onState: onStreamState });
  state.stream.start();
}

function stopAll() {
  state.stream?.stop();
  state.stream = null;
  for (const loop of state.loops) loop.stop();
  state.loops = [];
  state.failing.clear();
}

function refreshEverything() {
  for (const name of ["tree", "agents", "tasks", "projects", "detail"]) loops[name]?.kick(50);
}

// ---- events ------------------------------------------------------------------------------

function onEvent(subject, data) {
  const [kind, id, what] = subject.split(".");
  if (kind === "supervisors") {
    state.decisions.unshift({ ...data, at: Date.now() });
    state.decisions.length = Math.min(state.decisions.length, 8);
    if (data.event === "restarted") patchRestart(data);
    loops.tree.kick(100);
    loops.agents.kick(300);
  } else if (kind === "agents") {
    if (what === "heartbeat" || what === "status") {
      const agent = state.agents.find((a) => a.id === id);
      const newState = what === "status" ? data.to_state : data.state;
      if (agent && agent.state !== newState) {
        agent.state = newState;
        renderAgents();
      }
      if (what === "status") loops.agents.kick(500);
    } else if (id === "discovery") {
      loops.agents.kick(300);
    }
  } else if (kind === "tasks") {
    if (what === "progress") {
      state.progress.set(id, { progress: data.progress, message: data.message });
      const row = document.querySelector(`#tasks tr[data-task="${id}"]`);
      const task = state.tasks.find((t) => t.id === id);
      if (row && task) row.replaceWith(taskRow(task, state.progress.get(id), openTask));
    } else {
      loops.tasks.kick(300);
      loops.agents.kick(300);
    }
    if (state.detail) loops.detail.kick(400);
  } else if (kind === "discoveries") {
    addDiscovery(data);
  } else if (kind === "projects") {
    loops.projects.kick(200);
    if (state.detail?.kind === "project") loops.detail.kick(200);
  }
}
function wireForms() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    $("key-input").value = "";
    if (key) signIn(key);
  });
  $("signout").addEventListener("click", () => {
    keyStore.clear();
    showLogin(null);
  });
  $("detail-close").addEventListener("click", () => {
    state.detail = null;
    $("detail").hidden = true;
  });
  $("submit-priority").replaceChildren(...[...Array(10).keys()].map((p) => h("option", { value: p, selected: p === 5 }, `priority ${p}`)));
  $("filter-status").append(...TASK_STATUSES.map((s) => h("option", { value: s }, s)));
  for (const id of ["filter-status", "filter-capability", "filter-project"]) {
    $(id).addEventListener("change", () => loops.tasks?.kick(0));
  }
  $("task-filters").addEventListener("submit", (e) => e.preventDefault());
  $("submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const note = $("submit-result");
    let parameters = {};
    try {
      parameters = $("submit-params").value.trim() ? JSON.parse($("submit-params").value) : {};
    } catch (error) {
      note.className = "note error";
      note.textContent = `parameters: not JSON (${error.message})`;
      return;
    }
    const body = {
      title: $("submit-title").value.trim(),
      required_capabilities: $("submit-caps").value.split(",").map((c) => c.trim()).filter(Boolean),
      parameters,
      priority: Number($("submit-priority").value),
    };
    const task = await act(() => post("/api/v1/tasks", body), "submit");
    if (!task) return;
    note.className = "note";
    note.dataset.task = task.id;
    note.textContent = `submitted ${task.id}`;
    loops.tasks.kick(0);
    openTask(task.id);
  });
  $("spawn-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const spawned = await act(() => post("/api/v1/agents", { template: $("spawn-template").value }), "spawn");
    if (spawned) {
      $("submit-result").className = "note";
      $("submit-result").textContent = `spawned ${spawned.agent_id}`;
    }
    loops.agents.kick(100);
    loops.tree.kick(100);
  });
  $("key-create").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: $("newkey-name").value.trim(), scopes: [$("newkey-scope").value] };
    const created = await act(() => post("/api/v1/keys", body), "create key", "newkey-shown");
    if (created) {
      $("newkey-shown").className = "secret";
      $("newkey-shown").textContent = `${created.key}  (shown once)`;
      loops.keys?.kick(0);
    }
  });
}

hooks.onError = onError;
wireForms();
const saved = keyStore.get();
if (saved) signIn(saved);
else showLogin(null);
