// Small hand-written SVG charts: a line per series over the samples kept (the last
// minutes), the y axis from 0 to the largest value seen.

const SVG = "http://www.w3.org/2000/svg";
const W = 280;
const H = 90;
const PAD = { left: 34, right: 6, top: 6, bottom: 14 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function short(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/**
 * Draw (or redraw) a chart in `figure`: `times` are sample times (ms), each series
 * `{name, color, values}` with one value (or null) per sample.
 */
export function lineChart(figure, { title, unit = "", times, series, fixedMax }) {
  figure.replaceChildren();
  figure.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  const legend = document.createElement("span");
  legend.className = "legend";
  for (const s of series) {
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    const item = document.createElement("span");
    item.className = `swatch ${s.color}`;
    item.textContent = `${s.name} ${last === undefined ? "–" : short(last) + unit}`;
    legend.append(item);
  }
  caption.append(legend);
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = fixedMax ?? Math.max(1, ...all);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  const x0 = PAD.left;
  const x1 = W - PAD.right;
  const y0 = H - PAD.bottom;
  const y1 = PAD.top;
  svg.append(el("line", { x1: x0, y1: y0, x2: x1, y2: y0, class: "axis" }));
  svg.append(el("line", { x1: x0, y1: y1, x2: x1, y2: y1, class: "grid" }));
  svg.append(el("text", { x: x0 - 4, y: y1 + 8, class: "tick", "text-anchor": "end" }, short(max) + unit));
  svg.append(el("text", { x: x0 - 4, y: y0, class: "tick", "text-anchor": "end" }, "0"));
  if (times.length > 1) {
    const t0 = times[0];
    const span = Math.max(1, times[times.length - 1] - t0);
    const minutes = span / 60000;
    svg.append(el("text", { x: x0, y: H - 2, class: "tick" }, `-${minutes < 1 ? Math.round(span / 1000) + "s" : minutes.toFixed(1) + "min"}`));
    svg.append(el("text", { x: x1, y: H - 2, class: "tick", "text-anchor": "end" }, "now"));
    for (const s of series) {
      let d = "";
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        const x = x0 + ((times[i] - t0) / span) * (x1 - x0);
        const y = y0 - (Math.min(v, max) / max) * (y0 - y1);
        d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
        pen = true;
      });
      if (d) svg.append(el("path", { d, class: `line ${s.color}` }));
    }
  }
  figure.append(caption, svg);
}
