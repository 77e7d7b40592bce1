/* Small SVG charts for the dashboard, no dependencies.
 *
 *   Charts.line(element, {
 *     series: [{name: "train loss", points: [[x, y], ...], color}],
 *     xLabel: "step", yLabel: "loss", xFormat: (x) => ..., yFormat: (y) => ...,
 *     time: false,   // x values are epoch milliseconds when true
 *   });
 *   Charts.bar(element, {labels: ["Mon", ...], series: [{name, values: [...]}], stacked: true});
 *
 * Each call redraws the element. Points carry a <title> so hovering shows
 * the value; a legend lists the series.
 */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6feb", "#e5534b", "#1f9d55", "#c69026", "#8957e5", "#0e8a9a", "#d4629b", "#6b6b76"];
  const W = 640, H = 240, M = { top: 12, right: 14, bottom: 34, left: 52 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = 10 ** Math.floor(Math.log10(raw || 1));
    const norm = raw / mag;
    return (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  }
  function ticks(min, max, count) {
    if (!(max > min)) { max = min + 1; }
    const step = niceStep(max - min, count);
    const out = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function defaultFormat(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (a >= 10 || a === 0) return String(Math.round(v * 10) / 10);
    return String(+v.toPrecision(3));
  }
  const TIME_FORMAT = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    month: "numeric",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  });
  function timeFormat(ms) {
    return TIME_FORMAT.format(new Date(ms));
  }
  function legend(container, series) {
    if (series.length < 2 && !(series[0] && series[0].name)) return;
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color || PALETTE[i % PALETTE.length];
      item.append(swatch, document.createTextNode(s.name || ""));
      box.appendChild(item);
    });
    container.appendChild(box);
  }
  function empty(container, text) {
    container.replaceChildren();
    const box = document.createElement("div");
    box.className = "empty-chart";
    box.textContent = text || gettext("No data yet.");
    container.appendChild(box);
  }
  function frame(container, opts) {
    container.replaceChildren();
    container.classList.add("chart");
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label || opts.yLabel || gettext("chart") });
    container.appendChild(svg);
    return svg;
  }
  function axes(svg, xs, ys, opts, xScale, yScale) {
    const yFmt = opts.yFormat || defaultFormat;
    for (const t of ys) {
      const y = yScale(t);
      el("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid-line" }, svg);
      el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, svg).textContent = yFmt(t);
    }
    el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }, svg);
    for (const [value, label] of xs) {
      el("text", { x: xScale(value), y: H - M.bottom + 15, "text-anchor": "middle" }, svg).textContent = label;
    }
    if (opts.xLabel) el("text", { x: W - M.right, y: H - 4, "text-anchor": "end" }, svg).textContent = opts.xLabel;
    if (opts.yLabel) el("text", { x: 4, y: M.top - 2 }, svg).textContent = opts.yLabel;
  }

  function line(container, opts) {
    const series = (opts.series || []).filter((s) => s.points && s.points.length);
    if (!series.length) return empty(container, opts.emptyText);
    const all = series.flatMap((s) => s.points);
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    // Positive figures start from zero unless told otherwise: a chart
    // of 0.10 s against 0.11 s should not look like a tenfold change.
    if (opts.zero !== false && y0 > 0) y0 = 0;
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const yTicks = ticks(y0, y1, 4);
    const yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : y1 - y0;
    while (yTicks[yTicks.length - 1] < y1) yTicks.push(+(yTicks[yTicks.length - 1] + yStep).toFixed(10));
    y0 = Math.min(y0, yTicks[0]); y1 = Math.max(y1, yTicks[yTicks.length - 1]);
    const xScale = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
    const yScale = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
    const xFmt = opts.xFormat || (opts.time ? timeFormat : defaultFormat);
    const xTicks = opts.time
      ? Array.from({ length: 5 }, (_, i) => x0 + ((x1 - x0) * i) / 4)
      : ticks(x0, x1, 6).filter((t) => t >= x0 && t <= x1);
    const svg = frame(container, opts);
    axes(svg, xTicks.map((t) => [t, xFmt(t)]), yTicks, opts, xScale, yScale);
    const yFmt = opts.yFormat || defaultFormat;
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      const d = pts.map((p, j) => `${j ? "L" : "M"}${xScale(p[0]).toFixed(1)},${yScale(p[1]).toFixed(1)}`).join("");
      el("path", { d, class: "series-line", stroke: color, "stroke-dasharray": s.dashed ? "5 4" : "" }, svg);
      const showDots = pts.length <= 60 || s.dots;
      pts.forEach((p) => {
        const dot = el("circle", { cx: xScale(p[0]), cy: yScale(p[1]), r: showDots ? 2.6 : 0.01, fill: color }, svg);
        el("title", {}, dot).textContent =
          (s.name ? s.name + ": " : "") +
          interpolate(gettext("%(value)s at %(time)s"), { value: yFmt(p[1]), time: xFmt(p[0]) }, true);
      });
    });
    legend(container, series);
  }

  function bar(container, opts) {
    const labels = opts.labels || [];
    const series = opts.series || [];
    if (!labels.length || !series.length) return empty(container, opts.emptyText);
    const stacked = !!opts.stacked;
    const totals = labels.map((_, i) =>
      stacked ? series.reduce((sum, s) => sum + (+s.values[i] || 0), 0) : Math.max(...series.map((s) => +s.values[i] || 0)));
    const top = Math.max(...totals, 1);
    const yTicks = ticks(0, top, 4);
    // Extend the ticks past the tallest bar so it stays inside the chart.
    const step = yTicks.length > 1 ? yTicks[1] - yTicks[0] : top;
    while (yTicks[yTicks.length - 1] < top) yTicks.push(+(yTicks[yTicks.length - 1] + step).toFixed(10));
    const y1 = yTicks[yTicks.length - 1];
    const band = (W - M.left - M.right) / labels.length;
    const xScale = (i) => M.left + band * (i + 0.5);
    const yScale = (y) => H - M.bottom - (y / y1) * (H - M.top - M.bottom);
    const svg = frame(container, opts);
    const every = Math.ceil(labels.length / 10);
    axes(svg, labels.map((l, i) => [i, i % every ? "" : l]), yTicks, opts, xScale, yScale);
    const yFmt = opts.yFormat || defaultFormat;
    labels.forEach((label, i) => {
      let base = 0;
      series.forEach((s, k) => {
        const v = +s.values[i] || 0;
        const color = s.color || PALETTE[k % PALETTE.length];
        const width = stacked ? band * 0.7 : (band * 0.8) / series.length;
        const x = stacked ? xScale(i) - width / 2 : xScale(i) - band * 0.4 + width * k;
        const top = yScale(base + v), bottom = yScale(base);
        const rect = el("rect", { x, y: top, width: Math.max(width - 1, 1), height: Math.max(bottom - top, 0), fill: color, rx: 2 }, svg);
        el("title", {}, rect).textContent = `${label} · ${s.name ? s.name + ": " : ""}${yFmt(v)}`;
        if (stacked) base += v;
      });
    });
    legend(container, series);
  }

  window.Charts = { line, bar, palette: PALETTE, format: defaultFormat };
})();
