'use strict';
// Small SVG charts (no library, no CDN): line charts with event markers, and scatter plots.
const Charts = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 480, H = 240, L = 52, R = 12, T = 10, B = 30;
  const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'];
  const color = i => palette[i % palette.length];

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }

  function niceTicks(lo, hi, n) {
    if (!isFinite(lo) || !isFinite(hi)) return [];
    if (lo === hi) { lo -= 1; hi += 1; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return (+v.toPrecision(4)).toString();
  }

  function frame(xs, ys, opts) {
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (opts.yMin !== undefined) y0 = Math.min(y0, opts.yMin);
    if (opts.yMax !== undefined) y1 = Math.max(y1, opts.yMax);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    return { x0, x1, y0, y1, sx, sy };
  }

  function axes(svg, f, opts) {
    const g = el('g', { 'font-size': 10, fill: '#6b7280' }, svg);
    for (const t of niceTicks(f.y0, f.y1, 4)) {
      el('line', { x1: L, x2: W - R, y1: f.sy(t), y2: f.sy(t), stroke: '#eef0f3' }, g);
      el('text', { x: L - 4, y: f.sy(t) + 3, 'text-anchor': 'end' }, g).textContent = fmt(t);
    }
    for (const t of niceTicks(f.x0, f.x1, 5)) {
      el('text', { x: f.sx(t), y: H - B + 13, 'text-anchor': 'middle' }, g).textContent = opts.xCategories ? (opts.xCategories[t] ?? '') : fmt(t);
    }
    el('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: '#9ca3af' }, g);
    if (opts.xLabel) el('text', { x: (L + W - R) / 2, y: H - 3, 'text-anchor': 'middle' }, g).textContent = opts.xLabel;
  }

  function container(target, title, series) {
    target.innerHTML = '';
    const box = document.createElement('div');
    box.className = 'chart';
    const h = document.createElement('h3');
    h.textContent = title;
    box.appendChild(h);
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
    box.appendChild(svg);
    if (series && series.length > 1) {
      const legend = document.createElement('div');
      legend.className = 'legend';
      series.slice(0, 24).forEach((s, i) => {
        const item = document.createElement('span');
        item.innerHTML = `<i style="background:${s.color || color(i)}${s.dashed ? ';opacity:.5' : ''}"></i>`;
        item.appendChild(document.createTextNode(s.name));
        legend.appendChild(item);
      });
      box.appendChild(legend);
    }
    target.appendChild(box);
    return svg;
  }

  /** series: [{name, points: [[x, y]], color?, dashed?}]; markers: [{x, kind, label}] */
  function line(target, title, series, opts = {}) {
    series = series.filter(s => s.points.length > 0);
    const svg = container(target, title, series);
    const xs = series.flatMap(s => s.points.map(p => p[0])), ys = series.flatMap(s => s.points.map(p => p[1]));
    if (xs.length === 0) {
      el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', fill: '#9ca3af', 'font-size': 12 }, svg).textContent = 'no values yet';
      return svg;
    }
    const f = frame(xs.concat((opts.markers || []).map(m => m.x)), ys, opts);
    axes(svg, f, opts);
    for (const m of opts.markers || []) {
      const x = f.sx(m.x), stroke = m.kind === 'rollback' ? '#b91c1c' : '#b45309';
      const mark = el('line', { x1: x, x2: x, y1: T, y2: H - B, stroke, 'stroke-dasharray': '4 3', class: 'marker ' + m.kind }, svg);
      el('title', {}, mark).textContent = m.label;
    }
    series.forEach((s, i) => {
      const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${f.sx(p[0]).toFixed(1)},${f.sy(p[1]).toFixed(1)}`).join('');
      const path = el('path', { d, fill: 'none', stroke: s.color || color(i), 'stroke-width': 1.6, class: 'series', 'data-points': s.points.length }, svg);
      if (s.dashed) { path.setAttribute('stroke-dasharray', '5 4'); path.setAttribute('opacity', '0.55'); }
      el('title', {}, path).textContent = s.name;
    });
    return svg;
  }

  /** points: [{x, y, label, dim?}]; categories: the x axis's names when x is a category index */
  function scatter(target, title, points, opts = {}) {
    const svg = container(target, title, null);
    if (points.length === 0) {
      el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', fill: '#9ca3af', 'font-size': 12 }, svg).textContent = 'no values yet';
      return svg;
    }
    const f = frame(points.map(p => p.x), points.map(p => p.y), opts);
    axes(svg, f, opts);
    for (const p of points) {
      const c = el('circle', { cx: f.sx(p.x), cy: f.sy(p.y), r: 4, fill: p.dim ? '#9ca3af' : '#2563eb', 'fill-opacity': 0.8, class: 'point' }, svg);
      el('title', {}, c).textContent = p.label;
    }
    return svg;
  }

  return { line, scatter, color };
})();
