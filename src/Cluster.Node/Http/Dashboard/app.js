'use strict';
// The dashboard: the seed's API (/api, bearer token) read by fetch, live from /api/stream.
// EventSource cannot send an Authorization header, so the stream is read with fetch.
const S = { token: null, runs: [], sweeps: [], nodes: [], queues: {}, runData: {}, trialMetrics: {}, images: {}, loaded: false };
const $ = sel => document.querySelector(sel);
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const num = (v, d = 2) => v === null || v === undefined ? '–' : Number(v).toFixed(d);
const sleep = ms => new Promise(r => setTimeout(r, ms));
const badge = s => `<span class="badge ${esc(s)}">${esc(String(s).replace('_', ' '))}</span>`;
const ENDED = ['completed', 'failed', 'cancelled'];

class ApiError extends Error {}

function takeToken() {
  // a link may carry the token in its fragment (never sent to a server); it is moved to this tab's storage
  // (#token=T&view=/run/ID opens that view)
  const m = location.hash.match(/^#token=([^&]+)(?:&view=([^&]+))?/);
  if (m) {
    sessionStorage.setItem('cd-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + '#' + (m[2] ? decodeURIComponent(m[2]) : '/runs'));
  }
  S.token = sessionStorage.getItem('cd-token');
  if (!S.token) askToken();
}

function askToken(why) {
  if (why) $('#login-why').textContent = why;
  const d = $('#login');
  if (!d.open) d.showModal();
}

$('#login-form').addEventListener('submit', () => {
  S.token = $('#token').value.trim();
  sessionStorage.setItem('cd-token', S.token);
});

async function api(path, as = 'json') {
  const r = await fetch(path, { headers: { Authorization: 'Bearer ' + S.token } });
  if (r.status === 401) {
    askToken('The seed refused this token (401).');
    throw new ApiError('unauthorized');
  }
  if (!r.ok) {
    let detail = `${r.status} ${r.statusText}`;
    try { detail = (await r.json()).detail || detail; } catch { /* not problem+json */ }
    throw new ApiError(detail);
  }
  return as === 'blob' ? r.blob() : r.json();
}

function setLive(on) {
  const e = $('#live');
  e.className = 'live ' + (on ? 'on' : 'off');
  e.textContent = on ? 'live' : 'offline';
}

async function stream() {
  for (;;) {
    if (!S.token) { await sleep(300); continue; }
    try {
      const r = await fetch('/api/stream', { headers: { Authorization: 'Bearer ' + S.token } });
      if (r.status === 401) { askToken('The seed refused this token (401).'); S.token = null; continue; }
      if (!r.ok) throw new ApiError(r.statusText);
      setLive(true);
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let i;
        while ((i = buffer.indexOf('\n\n')) >= 0) {
          onEvent(buffer.slice(0, i));
          buffer = buffer.slice(i + 2);
        }
      }
    } catch { /* the seed went away: try again */ }
    setLive(false);
    await sleep(2000);
  }
}

function onEvent(chunk) {
  let event = 'message', data = '';
  for (const line of chunk.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data += line.slice(6);
  }
  if (event !== 'status' || !data) return;
  const s = JSON.parse(data);
  S.runs = s.runs; S.sweeps = s.sweeps; S.nodes = s.nodes; S.loaded = true;
  const now = Date.now();
  for (const r of S.runs) {
    if (ENDED.includes(r.state)) continue;
    const q = S.queues[r.runId] || (S.queues[r.runId] = []);
    q.push({ t: now, step: r.studentStep, pool: r.poolBatches, gen: r.generatorQueue, flight: r.studentInFlight });
    if (q.length > 600) q.shift();
  }
  render();
}

// ---------- views ----------

function render() {
  const [, view = 'runs', id] = (location.hash || '#/runs').split('/');
  document.querySelectorAll('nav a').forEach(a => a.classList.toggle('active', a.dataset.view === (view === 'run' ? 'runs' : view === 'sweep' ? 'sweeps' : view)));
  const main = $('#view');
  if (!S.loaded) { main.innerHTML = '<p class="muted">connecting…</p>'; return; }
  if (view === 'run' && id) return renderRun(main, decodeURIComponent(id));
  if (view === 'sweeps') return renderSweeps(main);
  if (view === 'sweep' && id) return renderSweep(main, decodeURIComponent(id));
  if (view === 'cluster') return renderCluster(main);
  return renderRuns(main);
}
window.addEventListener('hashchange', render);

function progress(step, total) {
  const pct = total > 0 ? Math.min(100, 100 * step / total) : 0;
  return `<div class="bar" title="${step}/${total}"><span style="width:${pct.toFixed(1)}%"></span></div>`;
}

function renderRuns(main) {
  const rows = S.runs.map(r => `<tr data-run="${esc(r.runId)}">
      <td><a href="#/run/${encodeURIComponent(r.runId)}">${esc(r.runId)}</a></td>
      <td>${esc(r.method)}</td><td>${badge(r.state)}</td>
      <td>${progress(r.studentStep, r.totalSteps)}</td><td class="num">${r.studentStep}/${r.totalSteps}</td>
      <td class="num acc">${num(r.studentAccuracy)}</td><td class="num">${num(r.teacherAccuracy)}</td>
      <td>${esc(r.node ?? '–')}</td><td>${esc(r.generatorNode ?? '–')}</td>
      <td class="muted">${esc(r.message ?? '')}</td></tr>`).join('');
  main.innerHTML = `<h1>Runs</h1>` + (S.runs.length === 0 ? '<p class="muted">no runs yet</p>' : `<div class="scroll"><table id="runs">
    <thead><tr><th>run</th><th>method</th><th>state</th><th>progress</th><th>step</th><th>student %</th><th>teacher %</th><th>student on</th><th>source on</th><th>message</th></tr></thead>
    <tbody>${rows}</tbody></table></div>`);
}

const stepOf = message => { const m = message.match(/(?:at|to) step (\d+)/); return m ? +m[1] : null; };

async function loadRun(id, run) {
  const d = S.runData[id] || (S.runData[id] = { metrics: [], events: [], samples: [], step: -1, state: null, busy: false, error: null });
  if (d.busy || (d.step === run.studentStep && d.state === run.state)) return d;
  d.busy = true;
  try {
    const [metrics, events, samples] = await Promise.all([
      api(`/api/runs/${encodeURIComponent(id)}/metrics?after=${d.metrics.length}`),
      api(`/api/runs/${encodeURIComponent(id)}/events?after=${d.events.length}`),
      api(`/api/runs/${encodeURIComponent(id)}/samples`)]);
    d.metrics.push(...metrics); d.events.push(...events); d.samples = samples;
    d.step = run.studentStep; d.state = run.state; d.error = null;
  } catch (e) { d.error = e.message; }
  finally { d.busy = false; }
  return d;
}

function series(rows, phase, keys) {
  return keys.map(k => ({ name: `${phase} ${k}`, points: rows.filter(r => r.phase === phase && r.values[k] !== undefined).map(r => [r.step, r.values[k]]) }))
    .filter(s => s.points.length > 0);
}

async function renderRun(main, id) {
  const run = S.runs.find(r => r.runId === id);
  if (!run) { main.innerHTML = `<h1>${esc(id)}</h1><p class="muted">no such run</p>`; return; }
  const d = await loadRun(id, run);
  if ((location.hash.split('/')[2] && decodeURIComponent(location.hash.split('/')[2])) !== id) return;   // the user moved on meanwhile
  const cards = [['step', `${run.studentStep}/${run.totalSteps}`], ['student %', num(run.studentAccuracy)], ['teacher %', num(run.teacherAccuracy)],
    ['pool', run.poolBatches], ['source queue', run.generatorQueue], ['in flight', run.studentInFlight], ['student on', run.node ?? '–'], ['source on', run.generatorNode ?? '–']];
  main.innerHTML = `<h1>${esc(id)} ${badge(run.state)}</h1>
    <p class="muted">${esc(run.name)} · ${esc(run.method)}</p>
    ${progress(run.studentStep, run.totalSteps)}
    ${run.message ? `<div class="message">${esc(run.message)}</div>` : ''}
    ${d.error ? `<div class="error">${esc(d.error)}</div>` : ''}
    <div class="cards" id="cards">${cards.map(([k, v]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v">${esc(v)}</div></div>`).join('')}</div>
    <h2>Curves</h2><div class="charts"><div id="c-loss"></div><div id="c-acc"></div><div id="c-source"></div><div id="c-queues"></div></div>
    <h2>Sample grids</h2><div class="samples" id="samples">${d.samples.length === 0 ? '<p class="muted">none (DeepInversion, ADI and DAFL write them at each evaluation)</p>' : ''}</div>
    <h2>Events</h2><div class="scroll"><table id="events"><tbody>${d.events.slice(-30).reverse().map(e =>
      `<tr class="${esc(e.kind)}"><td class="muted">${esc(e.time.replace('T', ' ').slice(0, 19))}</td><td>${e.kind === 'info' ? '' : badge(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join('')}</tbody></table></div>`;
  const markers = d.events.filter(e => e.kind === 'rollback' || e.kind === 'failover').map(e => ({ x: stepOf(e.message), kind: e.kind, label: e.message })).filter(m => m.x !== null);
  const keys = phase => [...new Set(d.metrics.filter(r => r.phase === phase).flatMap(r => Object.keys(r.values)))];
  const studentLoss = keys('student-0').filter(k => /^(loss|kl_|ce$)/.test(k));
  Charts.line($('#c-loss'), 'student loss', series(d.metrics, 'student-0', studentLoss), { markers, xLabel: 'step' });
  // a spec with a validation split evaluates on it during training and on the test set once, at the end
  const accKeys = ['val_accuracy', 'test_accuracy'];
  Charts.line($('#c-acc'), 'accuracy (%)', series(d.metrics, 'student-0', accKeys).concat(series(d.metrics, 'teacher', accKeys)), { markers, xLabel: 'step' });
  const sourceKeys = keys('generator').filter(k => /^(loss|r_|best_loss|ce$)/.test(k));
  Charts.line($('#c-source'), 'source (synthesis) losses', series(d.metrics, 'generator', sourceKeys), { xLabel: 'batch' });
  const q = S.queues[id] || [];
  Charts.line($('#c-queues'), 'queue depths (live)', [
    { name: 'pool', points: q.map(p => [p.step, p.pool]) }, { name: 'source queue', points: q.map(p => [p.step, p.gen]) },
    { name: 'in flight', points: q.map(p => [p.step, p.flight]) }], { xLabel: 'step', yMin: 0 });
  const box = $('#samples');
  for (const s of d.samples.slice(-8).reverse()) {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.alt = `${s.phase} step ${s.step}`;
    fig.appendChild(img);
    const cap = document.createElement('figcaption');
    cap.textContent = `${s.phase}, step ${s.step}`;
    fig.appendChild(cap);
    box.appendChild(fig);
    sampleUrl(id, s.file).then(u => { img.src = u; }, () => { cap.textContent += ' (not loaded)'; });
  }
}

function sampleUrl(id, file) {
  const key = id + '/' + file;
  return S.images[key] || (S.images[key] = api(`/api/runs/${encodeURIComponent(id)}/samples/${encodeURIComponent(file)}`, 'blob').then(b => URL.createObjectURL(b)));
}

function renderSweeps(main) {
  const rows = S.sweeps.map(s => {
    const count = st => s.trials.filter(t => t.state === st).length;
    const best = s.trials.map(t => t.best).filter(v => v !== null);
    return `<tr><td><a href="#/sweep/${encodeURIComponent(s.sweepId)}">${esc(s.sweepId)}</a></td><td>${esc(s.name)}</td><td>${badge(s.state)}</td>
      <td class="num">${s.trials.length}</td><td class="num">${count('running')}</td><td class="num">${count('completed')}</td><td class="num">${count('stopped')}</td>
      <td>${esc(s.metric)} (${esc(s.mode)})</td><td class="num">${best.length ? num(s.mode === 'min' ? Math.min(...best) : Math.max(...best), 4) : '–'}</td></tr>`;
  }).join('');
  main.innerHTML = `<h1>Sweeps</h1>` + (S.sweeps.length === 0 ? '<p class="muted">no sweeps yet</p>' : `<div class="scroll"><table id="sweeps">
    <thead><tr><th>sweep</th><th>name</th><th>state</th><th>trials</th><th>running</th><th>completed</th><th>stopped</th><th>metric</th><th>best</th></tr></thead>
    <tbody>${rows}</tbody></table></div>`);
}

async function trialCurve(t, metric) {
  const c = S.trialMetrics[t.runId];
  if (c && (c.step === t.step || c.busy)) return c.points;
  const entry = c || (S.trialMetrics[t.runId] = { points: [], rows: 0, step: -1, busy: false });
  entry.busy = true;
  try {
    const rows = await api(`/api/runs/${encodeURIComponent(t.runId)}/metrics?after=${entry.rows}`);
    entry.rows += rows.length;
    entry.points.push(...rows.filter(r => r.phase === 'student-0' && r.values[metric] !== undefined).map(r => [r.step, r.values[metric]]));
    entry.step = t.step;
  } catch { /* shown without it */ }
  finally { entry.busy = false; }
  return entry.points;
}

async function renderSweep(main, id) {
  const s = S.sweeps.find(x => x.sweepId === id);
  if (!s) { main.innerHTML = `<h1>${esc(id)}</h1><p class="muted">no such sweep</p>`; return; }
  const metric = s.metric.replace(/^best_/, '');
  const trials = s.trials.filter(t => t.runId);
  const curves = await Promise.all(trials.slice(0, 60).map(t => trialCurve(t, metric)));
  main.innerHTML = `<h1>${esc(id)} ${badge(s.state)}</h1><p class="muted">${esc(s.name)} · ${esc(s.metric)} (${esc(s.mode)}) · ${s.studentSteps} student steps</p>
    ${s.message ? `<div class="message">${esc(s.message)}</div>` : ''}
    <div class="charts"><div id="c-trials"></div>${s.paths.map((_, i) => `<div id="c-hp${i}"></div>`).join('')}</div>
    <h2>Trials</h2><div class="scroll"><table id="trials"><thead><tr><th>trial</th>${s.paths.map(p => `<th>${esc(p)}</th>`).join('')}<th>state</th><th>step</th><th>${esc(s.metric)}</th><th>best</th><th>rung</th><th>run</th></tr></thead>
    <tbody>${s.trials.map(t => `<tr><td>${esc(t.trialId)}</td>${t.values.map(v => `<td>${esc(v)}</td>`).join('')}<td>${badge(t.state)}</td><td class="num">${t.step}</td>
      <td class="num">${num(t.metric, 4)}</td><td class="num">${num(t.best, 4)}</td><td class="num">${t.rung}</td>
      <td>${t.runId ? `<a href="#/run/${encodeURIComponent(t.runId)}">${esc(t.runId)}</a>` : ''}</td></tr>`).join('')}</tbody></table></div>`;
  const dim = t => ['stopped', 'failed', 'cancelled'].includes(t.state);
  Charts.line($('#c-trials'), `${metric} of every trial (stopped dashed)`,
    trials.slice(0, 60).map((t, i) => ({ name: t.trialId, points: curves[i], dashed: dim(t) })), { xLabel: 'step' });
  s.paths.forEach((p, i) => {
    const done = s.trials.filter(t => (t.best ?? t.metric) !== null);
    const raw = done.map(t => t.values[i]);
    const numeric = raw.every(v => v !== '' && isFinite(Number(v)));
    let xs, opts = { xLabel: p };
    if (numeric) {
      xs = raw.map(Number);
      const pos = xs.filter(x => x > 0);
      if (pos.length === xs.length && Math.max(...xs) / Math.min(...xs) > 50) { xs = xs.map(Math.log10); opts.xLabel = `log10 ${p}`; }
    } else {
      const cats = [...new Set(raw)];
      xs = raw.map(v => cats.indexOf(v));
      opts.xCategories = cats;
    }
    Charts.scatter($(`#c-hp${i}`), `${s.metric} against ${p}`,
      done.map((t, j) => ({ x: xs[j], y: t.best ?? t.metric, label: `${t.trialId}: ${t.values[i]} → ${num(t.best ?? t.metric, 4)} (${t.state})`, dim: dim(t) })), opts);
  });
}

function renderCluster(main) {
  main.innerHTML = `<h1>Cluster</h1><div class="scroll"><table id="nodes"><thead><tr><th>node</th><th>status</th><th>roles</th><th>slots</th><th>reachable</th><th>running</th></tr></thead>
    <tbody>${S.nodes.map(n => `<tr><td>${esc(n.address)}</td><td>${badge(n.status)}</td><td>${esc(n.roles.filter(r => !r.startsWith('slots:')).join(', '))}</td>
      <td class="num">${n.slots}</td><td>${n.reachable ? 'yes' : '<b class="error">no</b>'}</td>
      <td>${n.runs.map(r => `<a href="#/run/${encodeURIComponent(r)}">${esc(r)}</a>`).join(', ') || '<span class="muted">idle</span>'}</td></tr>`).join('')}</tbody></table></div>`;
}

takeToken();
render();
stream();
