// A small SVG line chart for per-second series, drawn without any library.

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/** A "nice" upper bound for the y axis: 1, 2, 5 x 10^n. */
function niceMax(value) {
  if (value <= 4) return 4;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(n);
}

/**
 * Draws `points` ({t: ms, [key]: number}) as lines into `svg`, one per series
 * key, over the last `windowSeconds` seconds ending now.
 */
export function drawChart(svg, points, keys, windowSeconds) {
  const width = Math.max(240, Math.round(svg.clientWidth || svg.parentNode.clientWidth || 600));
  const height = Math.max(120, Math.round(svg.clientHeight || 180));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const left = 40, right = 10, top = 10, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const now = Date.now();
  const from = now - windowSeconds * 1000;
  const visible = points.filter((p) => p.t >= from);
  let max = 0;
  for (const p of visible) for (const k of keys) max = Math.max(max, p[k] || 0);
  max = niceMax(max);
  const x = (t) => left + ((t - from) / (windowSeconds * 1000)) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;

  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    svg.append(el("line", { class: "gridline", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    const label = el("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = compact(Math.round(v * 10) / 10);
    svg.append(label);
  }
  const step = windowSeconds >= 300 ? 60 : 30;
  for (let s = 0; s <= windowSeconds; s += step) {
    const t = now - s * 1000;
    const label = el("text", { class: "axis", x: x(t), y: height - 6, "text-anchor": s === 0 ? "end" : "middle" });
    label.textContent = s === 0 ? "now" : `-${s >= 60 ? `${s / 60}m` : `${s}s`}`;
    svg.append(label);
  }
  if (visible.length < 2) return;
  for (const key of keys) {
    const coords = visible.map((p) => `${x(p.t).toFixed(1)},${y(p[key] || 0).toFixed(1)}`);
    const g = el("g", { class: `series-${key}` });
    if (key === keys[0]) {
      const area = `M${x(visible[0].t).toFixed(1)},${y(0)} L${coords.join(" L")} L${x(visible[visible.length - 1].t).toFixed(1)},${y(0)} Z`;
      g.append(el("path", { class: "area", d: area, stroke: "none" }));
    }
    g.append(el("polyline", { class: "line", points: coords.join(" "), fill: "none" }));
    svg.append(g);
  }
}
