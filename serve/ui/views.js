// Rendering: data in, DOM out. Text goes in through textContent only (no innerHTML), so
// nothing an agent or a user wrote can run as code on the page.

export const ENDED = new Set(["completed", "failed", "cancelled", "timed_out"]);
export const TASK_STATUSES = ["pending", "queued", "assigned", "running", ...ENDED];

/** An element: `h("td", {class: "x", dataset: {task: id}, onclick}, child, "text")`. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const badge = (text, kind = text) => h("span", { class: `badge s-${kind}` }, text);
export const shortId = (id) => (id ? String(id).slice(0, 8) : "");

export function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}min ago`;
  return new Date(iso).toLocaleString();
}

export function progressBar(value, label) {
  const bar = h("span", { class: "bar" }, h("span", { class: "fill" }));
  bar.firstChild.style.width = `${Math.round(Math.max(0, Math.min(1, value)) * 100)}%`;
  return h("span", { class: "progress", title: label ?? "" }, bar, ` ${Math.round(value * 100)}%`);
}

export const json = (value) => h("pre", { class: "json" }, JSON.stringify(value, null, 2));

// ---- supervision tree -------------------------------------------------------------

/** The tree; `changes` maps an actor name to {at, what} for nodes that just changed. */
export function renderTree(root, changes) {
  const item = (node) => {
    const change = changes.get(node.actor_name);
    const fresh = change && Date.now() - change.at < 8000;
    const li = h("li", {
      class: fresh ? "node changed" : "node",
      dataset: {
        actor: node.actor_name,
        state: node.state,
        restarts: node.restarts ?? 0,
        pid: node.pid ?? "",
        breaker: node.breaker ?? "",
      },
    });
    li.append(
      h("div", { class: "row" },
        h("span", { class: `kind k-${node.kind}` }, node.kind === "supervisor" ? "▣" : "●"),
        h("span", { class: "name" }, node.id),
        node.strategy ? h("span", { class: "muted" }, node.strategy) : null,
        badge(node.state),
        h("span", { class: "restarts", title: "restarts" }, `↻ ${node.restarts ?? 0}`),
        node.breaker ? badge(`breaker ${node.breaker}`, `b-${node.breaker}`) : null,
        node.pid ? h("span", { class: "muted pid" }, `pid ${node.pid}`) : null,
        node.node_id ? h("span", { class: "muted", title: node.node_id }, `node ${shortId(node.node_id)}`) : null,
        node.standby ? h("span", { class: "muted" }, `standby ${node.standby}`) : null,
        fresh ? h("span", { class: "change-note" }, change.what) : null),
    );
    if (node.children?.length) li.append(h("ul", {}, node.children.map(item)));
    return li;
  };
  return item(root);
}

/** Nodes by actor name, for spotting what changed between two snapshots. */
export function flatten(root, into = new Map()) {
  into.set(root.actor_name, root);
  for (const child of root.children ?? []) flatten(child, into);
  return into;
}

export function describeChange(before, after) {
  const parts = [];
  for (const field of ["state", "restarts", "breaker", "pid"]) {
    if (before[field] !== after[field]) parts.push(`${field} ${before[field] ?? "–"} → ${after[field] ?? "–"}`);
  }
  return parts.join(", ");
}

// ---- agents -----------------------------------------------------------------------

/** An agent's row; `node` is its node in the tree (restarts counted by its supervisor),
 * when the tree shows it. */
export function agentRow(agent, currentTask, node, { canWrite, onStop, onTask }) {
  const live = !["stopping", "stopped", "failed"].includes(agent.state);
  return h("tr", { dataset: { agent: agent.id, state: agent.state } },
    h("td", {}, agent.id),
    h("td", {}, badge(agent.state)),
    h("td", {}, agent.capabilities.map((c) => h("span", { class: "chip" }, c))),
    h("td", {}, currentTask
      ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); onTask(currentTask.id); } }, currentTask.title)
      : h("span", { class: "muted" }, "–")),
    h("td", {}, node?.restarts ?? agent.restart_count),
    h("td", {}, canWrite && live && agent.supervisor_id
      ? h("button", { type: "button", class: "small", onclick: () => onStop(agent.id) }, "Stop")
      : null));
}

// ---- tasks ------------------------------------------------------------------------

export function taskProgress(task, live) {
  if (task.status === "completed") return progressBar(1);
  if (ENDED.has(task.status)) return h("span", { class: "muted" }, "–");
  if (live) return progressBar(live.progress, live.message);
  return progressBar(0);
}

export function taskRow(task, live, onOpen) {
  return h("tr", { dataset: { task: task.id, status: task.status }, class: "clickable", onclick: () => onOpen(task.id) },
    h("td", { title: task.id }, task.title),
    h("td", { class: "status" }, badge(task.status)),
    h("td", {}, taskProgress(task, live)),
    h("td", {}, (task.required_capabilities ?? []).join(", ")),
    h("td", {}, `${task.attempt}/${task.max_attempts}`),
    h("td", {}, task.assigned_to ?? ""),
    h("td", { class: "muted" }, ago(task.updated_at)));
}

export function traceId(task) {
  const parent = task.trace_context?.traceparent;
  return parent ? parent.split("-")[1] : null;
}

export function taskDetail(task, executions, live, { canWrite, onCancel }) {
  const errors = task.attempt_errors ?? [];
  return h("div", { class: "task-detail", dataset: { task: task.id, status: task.status } },
    h("h3", {}, task.title),
    h("dl", {},
      h("dt", {}, "id"), h("dd", {}, h("code", {}, task.id)),
      h("dt", {}, "status"), h("dd", { class: "status" }, badge(task.status), " ", taskProgress(task, live)),
      h("dt", {}, "trace id"), h("dd", {}, traceId(task) ? h("code", { class: "trace" }, traceId(task)) : "– (tracing off)"),
      h("dt", {}, "attempt"), h("dd", {}, `${task.attempt} of ${task.max_attempts}`),
      h("dt", {}, "agent"), h("dd", {}, task.assigned_to ?? "–"),
      h("dt", {}, "priority"), h("dd", {}, task.priority),
      h("dt", {}, "capabilities"), h("dd", {}, (task.required_capabilities ?? []).join(", ") || "–"),
      task.project_id ? [h("dt", {}, "project"), h("dd", {}, h("code", {}, task.project_id))] : null,
      task.parent_id ? [h("dt", {}, "parent"), h("dd", {}, h("code", {}, task.parent_id))] : null,
      h("dt", {}, "created"), h("dd", {}, ago(task.created_at)),
      h("dt", {}, "finished"), h("dd", {}, task.finished_at ? ago(task.finished_at) : "–")),
    canWrite && !ENDED.has(task.status)
      ? h("button", { type: "button", class: "danger", onclick: () => onCancel(task.id) }, "Cancel task")
      : null,
    h("h4", {}, `Attempt errors (${errors.length})`),
    errors.length
      ? h("ol", { class: "errors" }, errors.map((e) => h("li", {},
        badge(e.category ?? "error", "failed"), ` attempt ${e.attempt ?? "?"} on ${e.agent_id ?? "?"}: `,
        h("b", {}, e.type ?? ""), ` ${e.reason ?? ""}`)))
      : h("p", { class: "muted" }, "none"),
    task.error ? [h("h4", {}, "Error"), json(task.error)] : null,
    h("h4", {}, `Tool executions (${executions.length})`),
    executions.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["tool", "status", "agent", "ms", "error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, executions.map((x) => h("tr", {},
          h("td", {}, x.tool), h("td", {}, badge(x.status)), h("td", {}, x.agent_id ?? ""),
          h("td", {}, x.duration_ms?.toFixed(1) ?? ""), h("td", {}, x.error ?? "")))))
      : h("p", { class: "muted" }, "none"),
    h("h4", {}, "Parameters"), json(task.parameters),
    task.result !== null && task.result !== undefined ? [h("h4", {}, "Result"), json(task.result)] : null);
}

// ---- projects -----------------------------------------------------------------------

export function projectRow(project, onOpen) {
  return h("tr", { dataset: { project: project.id, status: project.status }, class: "clickable", onclick: () => onOpen(project.id) },
    h("td", { title: project.id }, project.name),
    h("td", {}, badge(project.status)),
    h("td", { class: "muted" }, ago(project.created_at)),
    h("td", { class: "muted" }, project.completed_at ? ago(project.completed_at) : "–"));
}

/** The task graph as an SVG: columns by dependency depth, edges to dependencies
 * (solid) and from a fan-out task to its chunks (dashed). */
export function taskGraph(tasks) {
  const SVG = "http://www.w3.org/2000/svg";
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const depth = new Map();
  const depthOf = (t, seen = new Set()) => {
    if (depth.has(t.id)) return depth.get(t.id);
    if (seen.has(t.id)) return 0;
    seen.add(t.id);
    const ups = [...(t.dependencies ?? []), ...(t.parent_id ? [t.parent_id] : [])]
      .map((id) => byId.get(id)).filter(Boolean);
    const d = ups.length ? 1 + Math.max(...ups.map((u) => depthOf(u, seen))) : 0;
    depth.set(t.id, d);
    return d;
  };
  tasks.forEach((t) => depthOf(t));
  const columns = [];
  for (const t of tasks) (columns[depth.get(t.id)] ??= []).push(t);
  const [NW, NH, GX, GY] = [150, 26, 40, 10];
  const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  const width = columns.length * (NW + GX);
  const height = rows * (NH + GY) + GY;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "graph");
  svg.setAttribute("width", width);
  const at = new Map();
  columns.forEach((col, c) => (col ?? []).forEach((t, r) => at.set(t.id, [c * (NW + GX) + 4, GY + r * (NH + GY)])));
  const line = (a, b, dashed) => {
    const [ax, ay] = at.get(a);
    const [bx, by] = at.get(b);
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", `M${ax + NW},${ay + NH / 2} C${ax + NW + GX / 2},${ay + NH / 2} ${bx - GX / 2},${by + NH / 2} ${bx},${by + NH / 2}`);
    path.setAttribute("class", dashed ? "edge dashed" : "edge");
    svg.append(path);
  };
  for (const t of tasks) {
    for (const dep of t.dependencies ?? []) if (at.has(dep)) line(dep, t.id, false);
    if (t.parent_id && at.has(t.parent_id)) line(t.parent_id, t.id, true);
  }
  for (const t of tasks) {
    const [x, y] = at.get(t.id);
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", `gnode s-${t.status}`);
    g.dataset.task = t.id;
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x, y, width: NW, height: NH, rx: 5 }).forEach(([k, v]) => rect.setAttribute(k, v));
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x + 6);
    text.setAttribute("y", y + 17);
    const label = t.step ?? t.title;
    text.textContent = label.length > 22 ? `${label.slice(0, 21)}…` : label;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${t.title} — ${t.status}${t.assigned_to ? " on " + t.assigned_to : ""}`;
    g.append(rect, text, title);
    svg.append(g);
  }
  return h("div", { class: "graph-box" }, svg);
}

/** A table of the rows of an array of objects (their scalar fields). */
function rowsTable(rows, limit = 12) {
  const columns = Object.keys(rows[0]).filter((k) => rows.some((r) => r[k] === null || typeof r[k] !== "object"));
  return h("table", { class: "findings" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.slice(0, limit).map((r) => h("tr", { dataset: { kind: r.kind ?? "" } },
      columns.map((c) => h("td", {}, r[c] === null || r[c] === undefined ? "" : String(r[c])))))));
}

/** The lists of records and summaries in a result, found down to a few levels (raw
 * internals such as a log analysis's `partial` left out), findings first. */
function collect(value, path, out, depth = 0) {
  if (value === null || typeof value !== "object" || depth > 3) return out;
  if (Array.isArray(value)) {
    if (value.length && value.every((x) => x !== null && typeof x === "object" && !Array.isArray(x))) out.tables.push([path, value]);
    return out;
  }
  for (const [key, inner] of Object.entries(value)) {
    if (["partial", "chunk", "examples"].includes(key)) continue;
    if (key === "summary" && typeof inner === "string") out.summaries.push(inner);
    else collect(inner, path ? `${path}.${key}` : key, out, depth + 1);
  }
  return out;
}

/** What a step found: its summary, its findings, and any other lists of records. */
export function stepFindings(name, step) {
  const compiled = step && typeof step === "object" && "status" in step && "result" in step;
  const result = compiled ? step.result : step;
  const parts = [h("h5", {}, name, compiled ? [" ", badge(step.status)] : null)];
  if (compiled && step.error) parts.push(json(step.error));
  const { tables, summaries } = collect(result, "", { tables: [], summaries: [] });
  for (const text of summaries) parts.push(h("p", { class: "summary" }, text));
  tables.sort(([a], [b]) => Number(!a.endsWith("findings")) - Number(!b.endsWith("findings")));
  for (const [path, rows] of tables.slice(0, 6)) parts.push(h("h6", {}, `${path || "rows"} (${rows.length})`), rowsTable(rows));
  if (!tables.length && !summaries.length && result !== null && result !== undefined) parts.push(json(result));
  return h("div", { class: "step", dataset: { step: name } }, parts);
}

export function projectDetail(project, { canWrite, onCancel, onTask }) {
  const result = project.result;
  const steps = result?.steps ?? {};
  return h("div", { class: "project-detail", dataset: { project: project.id, status: project.status } },
    h("h3", {}, project.name),
    h("dl", {},
      h("dt", {}, "id"), h("dd", {}, h("code", {}, project.id)),
      h("dt", {}, "status"), h("dd", {}, badge(project.status), " ", progressBar(project.progress)),
      h("dt", {}, "tasks"), h("dd", {}, project.tasks.length),
      project.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, project.error)] : null),
    canWrite && !ENDED.has(project.status)
      ? h("button", { type: "button", class: "danger", onclick: () => onCancel(project.id) }, "Cancel project")
      : null,
    h("h4", {}, "Task graph"),
    project.tasks.length ? taskGraph(project.tasks) : h("p", { class: "muted" }, "not planned yet"),
    h("ul", { class: "graph-list" }, project.tasks.map((t) => h("li", { dataset: { task: t.id } },
      badge(t.status), " ",
      h("a", { href: "#", onclick: (e) => { e.preventDefault(); onTask(t.id); } }, t.step ?? t.title)))),
    h("h4", {}, "Findings"),
    result
      ? h("div", { class: "findings-box" },
        result.summary_step ? h("p", { class: "muted" }, `summary step: ${result.summary_step}`) : null,
        Object.keys(steps).length
          ? Object.entries(steps).map(([name, value]) => stepFindings(name, value))
          : stepFindings("result", result))
      : h("p", { class: "muted" }, ENDED.has(project.status) ? "no results" : "compiled when the last task ends"),
    h("h4", {}, "Requirements"), json(project.requirements));
}

// ---- discoveries and keys -----------------------------------------------------------

export function discoveryItem(d) {
  const confidence = h("span", { class: "bar small" }, h("span", { class: "fill" }));
  confidence.firstChild.style.width = `${Math.round(d.confidence * 100)}%`;
  return h("li", { dataset: { discovery: d.discovery_id ?? d.id, type: d.type } },
    h("div", { class: "row" }, badge(d.type, "type"), confidence,
      h("span", { class: "muted" }, `${Math.round(d.confidence * 100)}% · ${d.agent_id} · ${ago(d.timestamp ?? d.created_at)}`)),
    h("div", { class: "content" }, d.content));
}

export function keyRow(key, onRevoke) {
  return h("tr", { dataset: { key: key.prefix } },
    h("td", {}, key.name), h("td", {}, h("code", {}, key.prefix)), h("td", {}, key.scopes.join(", ")),
    h("td", {}, `${key.rate_per_s}/s, burst ${key.burst}`),
    h("td", {}, key.revoked ? badge("revoked", "failed") : badge("live", "running")),
    h("td", {}, key.revoked ? null : h("button", { type: "button", class: "small danger", onclick: () => onRevoke(key) }, "Revoke")));
}
