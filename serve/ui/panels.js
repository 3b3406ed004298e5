// The panels: each loads its data and draws it (tree, agents, tasks and the detail,
// projects, discoveries, keys, metrics), and the actions they offer.

import { del, get, post } from "./api.js";
import { renderMetrics } from "./metrics.js";
import { $, KEEP_SAMPLES_MS, can, hooks, loops, state } from "./state.js";
import {
  ENDED, agentRow, badge, describeChange, discoveryItem, flatten, h, keyRow,
  projectDetail, projectRow, renderTree, taskDetail, taskRow,
} from "./views.js";

// ---- the tree ----------------------------------------------------------------------------

export async function refreshTree() {
  const askedAt = Date.now();
  const root = await get("/api/v1/supervisors/tree");
  if (askedAt < state.patchedAt) {
    loops.tree.kick(0); // asked before the decision shown: it may not hold it yet
    return;
  }
  showTree(root);
}

/** A `restarted` decision, shown at once: it counts one restart of the child and
 * carries the new actor's placement; the next snapshot confirms it. A
 * snapshot that already shows the new actor (it came before the event) is left as it is. */
export function patchRestart(decision) {
  if (!state.root) return;
  const copy = structuredClone(state.root);
  const supervisor = [...flatten(copy).values()].find((n) => n.kind === "supervisor" && n.id === decision.supervisor_id);
  const child = supervisor?.children?.find((c) => c.id === decision.child_id);
  if (!child) return;
  const detail = decision.detail ?? {};
  if (!detail.actor_id || detail.actor_id === child.actor_id) return; // shown already
  Object.assign(child, { state: "running", restarts: (child.restarts ?? 0) + 1 });
  for (const field of ["pid", "node_id", "actor_id"]) if (detail[field]) child[field] = detail[field];
  state.patchedAt = Date.now();
  showTree(copy);
}

function showTree(root) {
  state.root = root;
  const now = flatten(root);
  for (const [name, node] of now) {
    const before = state.nodes.get(name);
    const what = before ? describeChange(before, node) : "";
    if (what) state.changes.set(name, { at: Date.now(), what });
  }
  state.nodes = now;
  $("tree").replaceChildren(renderTree(root, state.changes));
  renderAgents();
  $("tree-stamp").textContent = `as of ${new Date().toLocaleTimeString()}`;
  const decisions = state.decisions.map((d) => h("li", {},
    badge(d.event, d.event), ` ${d.supervisor_id}${d.child_id ? " / " + d.child_id : ""} `,
    h("span", { class: "muted" }, d.reason ?? "")));
  $("tree").append(h("li", { class: "decisions" }, decisions.length ? h("ol", {}, decisions) : null));
  const fading = [...state.changes.values()].some((c) => Date.now() - c.at < 8000);
  if (fading) loops.tree.kick(8200); // redraw once the highlight is over
}

// ---- agents ------------------------------------------------------------------------------

export async function refreshAgents() {
  const [agents, running, assigned] = await Promise.all([
    get("/api/v1/agents"),
    get("/api/v1/tasks?status=running&limit=200&newest_first=true"),
    get("/api/v1/tasks?status=assigned&limit=200&newest_first=true"),
  ]);
  state.agents = agents;
  state.current = new Map([...assigned.items, ...running.items].map((t) => [t.assigned_to, t]));
  renderAgents();
}

export function renderAgents() {
  const counts = {};
  for (const a of state.agents) counts[a.state] = (counts[a.state] ?? 0) + 1;
  $("agent-states").replaceChildren(...Object.entries(counts).map(([s, n]) => h("span", { class: "chip" }, badge(s), ` ${n}`)));
  const rows = state.agents.map((a) => agentRow(a, state.current.get(a.id), state.nodes.get(`agent:${a.id}`), {
    canWrite: can("write"), onStop: stopAgent, onTask: openTask,
  }));
  $("agents").tBodies[0].replaceChildren(...rows);
}

export async function loadTemplates() {
  try {
    const templates = await get("/api/v1/templates");
    $("spawn-template").replaceChildren(...templates.map((t) => h("option", { value: t.name }, t.name)));
  } catch (error) {
    hooks.onError(error, "templates");
  }
}

async function stopAgent(agentId) {
  await act(() => del(`/api/v1/agents/${encodeURIComponent(agentId)}`), `stopping ${agentId}`);
  loops.agents.kick(100);
  loops.tree.kick(100);
}

// ---- tasks -------------------------------------------------------------------------------

export async function refreshTasks() {
  const params = new URLSearchParams({ limit: "50", newest_first: "true" });
  const status = $("filter-status").value;
  const capability = $("filter-capability").value.trim();
  const project = $("filter-project").value.trim();
  if (status) params.set("status", status);
  if (capability) params.set("capability", capability);
  if (project) params.set("project_id", project);
  const page = await get(`/api/v1/tasks?${params}`);
  state.tasks = page.items;
  for (const t of state.tasks) if (ENDED.has(t.status)) state.progress.delete(t.id);
  $("tasks").tBodies[0].replaceChildren(...state.tasks.map((t) => taskRow(t, state.progress.get(t.id), openTask)));
}

export function openTask(id) {
  state.detail = { kind: "task", id };
  loops.detail.kick(0);
}

function openProject(id) {
  state.detail = { kind: "project", id };
  loops.detail.kick(0);
}

export async function refreshDetail() {
  const detail = state.detail;
  if (!detail) return;
  let body;
  if (detail.kind === "task") {
    const [task, executions] = await Promise.all([
      get(`/api/v1/tasks/${detail.id}`),
      get(`/api/v1/tasks/${detail.id}/tool-executions`),
    ]);
    body = taskDetail(task, executions, state.progress.get(task.id), {
      canWrite: can("write"),
      onCancel: (id) => act(() => post(`/api/v1/tasks/${id}/cancel`), "cancel").then(() => loops.detail.kick(0)),
    });
  } else {
    const project = await get(`/api/v1/projects/${detail.id}`);
    body = projectDetail(project, {
      canWrite: can("write"),
      onCancel: (id) => act(() => post(`/api/v1/projects/${id}/cancel`), "cancel").then(() => loops.detail.kick(0)),
      onTask: openTask,
    });
  }
  if (state.detail !== detail) return; // another was opened meanwhile
  $("detail-body").replaceChildren(body);
  $("detail").hidden = false;
}

// ---- projects, discoveries, keys ----------------------------------------------------------

export async function refreshProjects() {
  const page = await get("/api/v1/projects?limit=500");
  const rows = page.items.slice(-50).reverse().map((p) => projectRow(p, openProject));
  $("projects").tBodies[0].replaceChildren(...rows);
}

export async function loadDiscoveries() {
  let cursor = null;
  let items = [];
  try {
    for (let pages = 0; pages < 5; pages += 1) {
      const page = await get(`/api/v1/discoveries?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      items = items.concat(page.items).slice(-50);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
  } catch (error) {
    hooks.onError(error, "discoveries");
  }
  const list = $("discoveries");
  for (const d of items) {
    if (!list.querySelector(`[data-discovery="${d.id}"]`)) list.prepend(discoveryItem(d));
  }
}

export function addDiscovery(d) {
  const list = $("discoveries");
  if (list.querySelector(`[data-discovery="${d.discovery_id}"]`)) return;
  const item = discoveryItem(d);
  item.classList.add("changed");
  list.prepend(item);
  while (list.children.length > 50) list.lastChild.remove();
}

export async function refreshKeys() {
  const keys = await get("/api/v1/keys");
  $("keys").tBodies[0].replaceChildren(...keys.map((k) => keyRow(k, revokeKey)));
}

async function revokeKey(key) {
  await act(() => del(`/api/v1/keys/${encodeURIComponent(key.id)}`), `revoking ${key.prefix}`);
  loops.keys?.kick(0);
}

// ---- metrics -------------------------------------------------------------------------------

export async function refreshMetrics() {
  const m = await get("/api/v1/metrics/system");
  const now = Date.now();
  state.samples.push({ at: now, m });
  while (state.samples.length && now - state.samples[0].at > KEEP_SAMPLES_MS) state.samples.shift();
  renderMetrics(state.samples, $("figures"), $("charts"));
  $("metrics-stamp").textContent = `up ${Math.round(m.uptime_s)} s · NATS ${m.nats.connected ? "connected" : "down"}`;
}

// ---- actions -------------------------------------------------------------------------------

/** Run an action; a refusal is shown where it happened, never thrown away. */
export async function act(fn, what, noteId = "submit-result") {
  try {
    return await fn();
  } catch (error) {
    if (hooks.onError(error, what)) return null;
    const note = $(noteId);
    note.className = "note error";
    note.textContent = `${what}: ${error.status === 403 ? "not allowed for this key (403)" : error.message}`;
    return null;
  }
}
