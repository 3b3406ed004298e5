// The system figures (`GET /api/v1/metrics/system`) and their charts over the samples kept.

import { lineChart } from "./charts.js";
import { h } from "./views.js";

const running = (tasks) => (tasks.assigned ?? 0) + (tasks.running ?? 0);
const failed = (tasks) => (tasks.failed ?? 0) + (tasks.timed_out ?? 0);

/** The latest figures in `figures`, four charts of `samples` ({at, m}) in `charts`. */
export function renderMetrics(samples, figures, charts) {
  const m = samples[samples.length - 1].m;
  const t = m.tasks;
  figures.replaceChildren(
    ...[
      ["agents", m.agents.total], ["busy", m.agents.busy], ["queued", t.queued ?? 0],
      ["running", running(t)], ["completed", t.completed ?? 0], ["failed", failed(t)],
      ["restarts", m.restarts], ["outbox", m.outbox_pending],
    ].map(([label, value]) => h("div", { class: "figure", dataset: { figure: label } }, h("b", {}, value), h("span", {}, label))));
  const times = samples.map((s) => s.at);
  const series = (name, color, pick) => ({ name, color, values: samples.map((s) => pick(s.m)) });
  if (charts.children.length !== 4) charts.replaceChildren(...[1, 2, 3, 4].map(() => h("figure")));
  const [c1, c2, c3, c4] = charts.children;
  lineChart(c1, { title: "tasks", times, series: [
    series("queued", "c1", (x) => x.tasks.queued ?? 0),
    series("running", "c2", (x) => running(x.tasks)),
    series("failed", "c3", (x) => failed(x.tasks)),
  ] });
  lineChart(c2, { title: "agents", times, series: [
    series("busy", "c2", (x) => x.agents.busy), series("idle", "c1", (x) => x.agents.idle),
    series("restarts", "c3", (x) => x.restarts),
  ] });
  lineChart(c3, { title: "host", unit: "%", fixedMax: 100, times, series: [
    series("cpu", "c1", (x) => x.host.cpu_percent), series("memory", "c2", (x) => x.host.memory_percent),
  ] });
  lineChart(c4, { title: "NATS msgs/s", times, series: [
    series("in", "c1", (x) => x.nats.in_msgs_per_s), series("out", "c2", (x) => x.nats.out_msgs_per_s),
  ] });
}
