// Nudge reports dashboard. Plain JavaScript, no dependencies: it reads the
// JSON API of the same server and draws each chart as SVG.
//
// Every chart is a <section class="card" id="chart-NAME"> whose numbers are
// also in the DOM for people and tests: data-total on the section (the sum
// of its main series), <output class="total" data-metric|data-key
// data-value> elements shown as totals, and a table of every point.
// <body data-state> is "loading", then "ready" or "error".
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#2f6fed', '#f97316', '#16a34a', '#a855f7', '#dc2626', '#0891b2', '#ca8a04', '#db2777'];
  const PRESETS = {
    '15m': ['-15m', 'now'], '1h': ['-1h', 'now'], '6h': ['-6h', 'now'], '24h': ['-24h', 'now'],
    '7d': ['-7d', 'now'], '30d': ['-30d', 'now'], '90d': ['-90d', 'now'],
  };
  const LIVE_REFRESH_MS = 15000;

  const CHARTS = [
    { id: 'messages', title: 'Messages sent', kind: 'series', metrics: ['messages_sent'], labels: ['messages'] },
    { id: 'recipients', title: 'Recipients', kind: 'series', metrics: ['recipients'], labels: ['recipients'] },
    { id: 'episodes', title: 'Unread episodes', kind: 'series', metrics: ['episodes_opened', 'episodes_closed'], labels: ['opened', 'closed by a read'] },
    { id: 'funnel', title: 'Reminder funnel', kind: 'funnel' },
    { id: 'effect', title: 'Did reminders work? Pushed, opened, converted by stage', kind: 'effect' },
    { id: 'push', title: 'Push success by platform', kind: 'push' },
    { id: 'dau', title: 'Daily active users', kind: 'dau' },
    { id: 'deadletters', title: 'Bad input (dead letters) by reason', kind: 'deadletters' },
  ];
  // What a dead letter's reason means (docs/events.md, "What happens to bad input").
  const DEAD_REASONS = {
    invalid_json: 'not a JSON object', invalid_utf8: 'not valid UTF-8', too_large: 'over 64 KiB',
    duplicate_key: 'a key twice in one object', unsupported_version: 'unknown version (v)',
    unknown_type: 'unknown event type', missing_field: 'a required field missing',
    invalid_field: 'a field of the wrong type or value', field_too_large: 'a field over its limit',
    no_event_field: 'no event field', wrong_shard: 'published to the wrong shard',
    max_deliveries: 'delivered too often', apply_failed: 'Redis refused its update',
  };
  const FUNNEL_LABELS = {
    episodes_opened: 'Episodes opened',
    reminders_scheduled: 'Reminders scheduled',
    reminders_cancelled: 'Cancelled by a read',
    reminders_suppressed: 'Suppressed',
    reminders_sent: 'Reminders sent',
    push_failed: 'Pushes failed',
  };

  // ------------------------------------------------------------ DOM helpers

  function el(tag, attrs, ...children) {
    const svg = ['svg', 'g', 'path', 'line', 'rect', 'circle', 'text', 'title'].includes(tag);
    const node = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      // Styles go through the CSSOM: the page's CSP forbids style attributes.
      if (k === 'style') Object.assign(node.style, v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const fmt = new Intl.NumberFormat('en-US');
  const num = (n) => fmt.format(n);
  const pct = (f) => (f * 100).toFixed(f < 0.1 && f > 0 ? 1 : 0) + '%';

  // ------------------------------------------------------------ state

  const form = document.getElementById('controls');
  const chartsBox = document.getElementById('charts');
  const statusBox = document.getElementById('status');
  let timer = null;
  let generation = 0;

  function browserZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (e) { return 'UTC'; }
  }

  function readURL() {
    const p = new URLSearchParams(location.search);
    const range = p.get('range') || (p.get('from') || p.get('to') ? 'custom' : '7d');
    const preset = PRESETS[range];
    return {
      range: preset || range === 'custom' ? range : '7d',
      from: p.get('from') || (preset ? preset[0] : '-7d'),
      to: p.get('to') || (preset ? preset[1] : 'now'),
      step: p.get('step') || 'auto',
      tz: p.get('tz') || browserZone(),
      app: p.get('app') || '',
      platform: p.get('platform') || '',
      live: p.get('live') === '1',
    };
  }

  function writeForm(st) {
    form.range.value = st.range;
    form.from.value = st.from;
    form.to.value = st.to;
    form.step.value = st.step;
    form.tz.value = st.tz;
    form.app.value = st.app;
    form.platform.value = st.platform;
    form.live.checked = st.live;
  }

  function readForm() {
    return {
      range: form.range.value,
      from: form.from.value.trim() || '-7d',
      to: form.to.value.trim() || 'now',
      step: form.step.value,
      tz: form.tz.value.trim() || 'UTC',
      app: form.app.value.trim(),
      platform: form.platform.value,
      live: form.live.checked,
    };
  }

  function writeURL(st) {
    const p = new URLSearchParams();
    if (st.range !== 'custom') p.set('range', st.range);
    else { p.set('from', st.from); p.set('to', st.to); }
    for (const k of ['step', 'tz', 'app', 'platform']) if (st[k] && st[k] !== 'auto') p.set(k, st[k]);
    if (st.live) p.set('live', '1');
    history.replaceState(null, '', '?' + p.toString());
  }

  // Rough length of a range in ms, to pick a step; null if unknown.
  function rangeMs(from, to) {
    const rel = (s) => {
      if (s === 'now') return 0;
      const m = /^(?:now)?([+-])(\d+)([smhdw])$/.exec(s);
      if (!m) return null;
      const unit = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[3]];
      return (m[1] === '-' ? -1 : 1) * Number(m[2]) * unit;
    };
    const at = (s) => {
      const r = rel(s);
      if (r !== null) return Date.now() + r;
      const t = Date.parse(s);
      return Number.isNaN(t) ? null : t;
    };
    const a = at(from), b = at(to);
    return a === null || b === null ? null : b - a;
  }

  function resolveStep(st) {
    if (st.step !== 'auto') return st.step;
    const ms = rangeMs(st.from, st.to);
    if (ms === null) return 'hour';
    if (ms <= 3 * 36e5) return 'minute';
    if (ms <= 8 * 864e5) return 'hour';
    return 'day';
  }

  // ------------------------------------------------------------ API

  class APIError extends Error {}

  async function api(path, params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== false) p.set(k, v === true ? '1' : v);
    const res = await fetch(path + '?' + p.toString(), { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (res.status === 401) {
      location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
      throw new APIError('signed out');
    }
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) throw new APIError((body && body.error) || res.status + ' ' + res.statusText);
    return body;
  }

  function csvLink(path, params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== false) p.set(k, v === true ? '1' : v);
    p.set('format', 'csv');
    return path + '?' + p.toString();
  }

  // ------------------------------------------------------------ time labels

  function timeFormatter(tz, opts) {
    try { return new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: tz }); } catch (e) {
      return new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: 'UTC' });
    }
  }

  function labeler(step, tz) {
    const day = timeFormatter(tz, { day: '2-digit', month: 'short' });
    const hm = timeFormatter(tz, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    const full = timeFormatter(tz, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    const numeric = timeFormatter(tz, { day: 'numeric', hour: 'numeric', minute: 'numeric', hourCycle: 'h23' });
    // Minute of the local day and day of the month of t.
    const clock = (t) => {
      const p = {};
      for (const part of numeric.formatToParts(t)) p[part.type] = Number(part.value);
      return { minute: (p.hour % 24) * 60 + p.minute, day: p.day };
    };
    return {
      tick: (t, prev) => {
        if (step === 'day') return day.format(t);
        const c = clock(t);
        if (c.minute === 0) return day.format(t);
        const d = day.format(t);
        return prev && day.format(prev) === d ? hm.format(t) : d + ' ' + hm.format(t);
      },
      full: (t) => (step === 'day' ? day.format(t) + ' ' + t.getUTCFullYear() : full.format(t)),
      // ticks returns the indexes of times to label: at most max of them,
      // on round local times (whole hours, midnights, the 1st of a month).
      ticks: (times, max) => {
        const n = times.length;
        if (n <= 1) return n ? [0] : [];
        const clocks = times.map(clock);
        const everyMin = step === 'day' ? [] : [1, 5, 10, 15, 30, 60, 120, 180, 360, 720];
        const everyDay = [1, 2, 7, 14];
        const pick = (aligned) => clocks.map((c, i) => (aligned(c) ? i : -1)).filter((i) => i >= 0);
        for (const k of everyMin) {
          const idx = pick((c) => c.minute % k === 0);
          if (idx.length && idx.length <= max) return idx;
        }
        for (const k of everyDay) {
          const idx = pick((c) => c.minute === 0 && (c.day - 1) % k === 0);
          if (idx.length && idx.length <= max) return idx;
        }
        const idx = pick((c) => c.minute === 0 && c.day === 1);
        if (idx.length && idx.length <= max) return idx;
        return Array.from({ length: max }, (_, k) => Math.round((k * (n - 1)) / (max - 1)));
      },
    };
  }

  // ------------------------------------------------------------ charts

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function shortNum(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(n % 1e9 ? 1 : 0) + 'G';
    if (n >= 1e6) return (n / 1e6).toFixed(n % 1e6 ? 1 : 0) + 'M';
    if (n >= 1e3) return (n / 1e3).toFixed(n % 1e3 ? 1 : 0) + 'k';
    return String(n);
  }

  // valueAxis returns a chart's axis group with its value scale: a grid line
  // from x = left to x = right and a label at 0, ¼, ½, ¾ and all of max, at
  // heights y(v).
  function valueAxis(max, y, left, right) {
    const axis = el('g', { class: 'axis' });
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      axis.append(
        el('line', { class: k ? 'grid-line' : 'baseline', x1: left, x2: right, y1: y(v), y2: y(v) }),
        el('text', { x: left - 6, y: y(v) + 3, 'text-anchor': 'end' }, shortNum(Math.round(v))),
      );
    }
    return axis;
  }

  // lineChart draws series = [{label, color, points: [{t: Date, v, live}]}]
  // sharing their times.
  function lineChart(series, lab) {
    const W = 640, H = 220, L = 46, R = 12, T = 10, B = 26;
    const n = series.length ? series[0].points.length : 0;
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p.v))));
    const x = (i) => (n <= 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (n - 1));
    const y = (v) => H - B - (v / max) * (H - T - B);

    const axis = valueAxis(max, y, L, W - R);
    let prev = null;
    for (const i of n ? lab.ticks(series[0].points.map((p) => p.t), 7) : []) {
      const t = series[0].points[i].t;
      const anchor = n === 1 ? 'middle' : x(i) - L < 30 ? 'start' : W - R - x(i) < 30 ? 'end' : 'middle';
      axis.append(el('line', { class: 'grid-line', x1: x(i), x2: x(i), y1: H - B, y2: H - B + 4 }));
      axis.append(el('text', { x: x(i), y: H - 8, 'text-anchor': anchor }, lab.tick(t, prev)));
      prev = t;
    }
    svg.append(axis);
    if (!n) {
      svg.append(el('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No data in this range'));
      return svg;
    }

    series.forEach((s, si) => {
      const pts = s.points.map((p, i) => [x(i), y(p.v)]);
      const d = pts.map(([px, py], i) => (i ? 'L' : 'M') + px.toFixed(1) + ' ' + py.toFixed(1)).join(' ');
      if (si === 0 && n > 1) {
        svg.append(el('path', { class: 'area', fill: s.color, d: d + ` L${x(n - 1).toFixed(1)} ${y(0)} L${x(0).toFixed(1)} ${y(0)} Z` }));
      }
      svg.append(el('path', { class: 'line', stroke: s.color, d }));
      if (n <= 120) {
        s.points.forEach((p, i) => {
          if (n > 40 && !p.live) return;
          svg.append(el('circle', { class: 'dot' + (p.live ? ' live' : ''), cx: pts[i][0], cy: pts[i][1], r: p.live ? 3.5 : 2.5, fill: s.color, stroke: p.live ? s.color : undefined }));
        });
      }
    });
    // Hover targets: one column per bucket with every series' value.
    const w = n <= 1 ? W - L - R : (W - L - R) / (n - 1);
    const hits = el('g', {});
    for (let i = 0; i < n; i++) {
      const lines = series.map((s) => `${s.label}: ${num(s.points[i].v)}${s.points[i].live ? ' (live)' : ''}`);
      hits.append(el('rect', { class: 'hit', x: x(i) - w / 2, y: T, width: w, height: H - T - B },
        el('title', {}, lab.full(series[0].points[i].t) + '\n' + lines.join('\n'))));
    }
    svg.append(hits);
    return svg;
  }

  // barChart draws horizontal bars = [{label, value, note, color}].
  function barChart(bars) {
    const W = 640, rowH = 28, L = 150, R = 120, T = 6;
    const H = T * 2 + bars.length * rowH;
    const max = Math.max(1, ...bars.map((b) => b.value));
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    bars.forEach((b, i) => {
      const y0 = T + i * rowH;
      const w = Math.max(b.value ? 2 : 0, ((W - L - R) * b.value) / max);
      svg.append(
        el('text', { class: 'bar-label', x: L - 8, y: y0 + rowH / 2 + 4, 'text-anchor': 'end' }, b.label),
        el('rect', { x: L, y: y0 + 5, width: w, height: rowH - 10, rx: 3, fill: b.color },
          el('title', {}, `${b.label}: ${num(b.value)}${b.note ? ' (' + b.note + ')' : ''}`)),
        el('text', { class: 'bar-value', x: L + w + 6, y: y0 + rowH / 2 + 4 }, num(b.value) + (b.note ? '  ' + b.note : '')),
      );
    });
    return svg;
  }

  // groupedBars draws vertical bars per group: groups = [{label, bars: [{label, value, color}], note}].
  function groupedBars(groups, keys) {
    const W = 640, H = 220, L = 46, R = 12, T = 22, B = 26;
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    const max = niceMax(Math.max(0, ...groups.flatMap((g) => g.bars.map((b) => b.value))));
    const y = (v) => H - B - (v / max) * (H - T - B);
    const axis = valueAxis(max, y, L, W - R);
    svg.append(axis);
    if (!groups.length) {
      svg.append(el('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No pushes in this range'));
      return svg;
    }
    const slot = (W - L - R) / groups.length;
    const bw = Math.min(48, (slot * 0.7) / keys.length);
    groups.forEach((g, gi) => {
      const cx = L + slot * gi + slot / 2;
      const x0 = cx - (bw * g.bars.length) / 2;
      g.bars.forEach((b, bi) => {
        svg.append(el('rect', { x: x0 + bi * bw + 1, y: y(b.value), width: bw - 2, height: y(0) - y(b.value), rx: 2, fill: b.color },
          el('title', {}, `${g.label} ${b.label}: ${num(b.value)}`)));
      });
      axis.append(el('text', { x: cx, y: H - 8, 'text-anchor': 'middle' }, g.label));
      if (g.note) svg.append(el('text', { class: 'bar-label', x: cx, y: T - 8, 'text-anchor': 'middle' }, g.note));
    });
    return svg;
  }

  function legend(items) {
    return el('div', { class: 'legend' }, items.map((it) => el('span', {}, el('span', { class: 'swatch', style: { background: it.color } }), it.label)));
  }

  function table(head, rows, liveRows, title) {
    return el('details', {}, el('summary', {}, `${title || 'Data'} (${rows.length} rows)`),
      el('div', { class: 'data-wrap' }, el('table', { class: 'data' },
        el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
        el('tbody', {}, rows.map((r, i) => el('tr', { class: liveRows && liveRows[i] ? 'live' : undefined }, r.map((c) => el('td', {}, c))))))));
  }

  function total(label, value, attrs, color) {
    return el('span', {},
      color ? el('span', { class: 'swatch', style: { background: color } }) : null, label,
      el('output', { class: 'total', 'data-value': value, ...attrs }, num(value)));
  }

  // ------------------------------------------------------------ chart loaders

  function card(def) {
    let sec = document.getElementById('chart-' + def.id);
    if (!sec) {
      sec = el('section', { class: 'card', id: 'chart-' + def.id, 'data-kind': def.kind },
        el('header', {}, el('h2', {}, def.title), el('a', { class: 'csv', href: '#' }, 'CSV')),
        el('div', { class: 'body' }));
      chartsBox.append(sec);
    }
    sec.dataset.state = 'loading';
    return sec;
  }

  function fill(sec, csvHref, ...nodes) {
    sec.querySelector('a.csv').href = csvHref;
    sec.querySelector('.body').replaceChildren(...nodes.filter(Boolean));
  }

  async function loadSeries(def, st, base) {
    const sec = card(def);
    const results = await Promise.all(def.metrics.map((m) => api('/api/series', { ...base, metric: m, step: st.stepUsed })));
    const lab = labeler(st.stepUsed, results[0].tz);
    const series = results.map((r, i) => ({
      label: def.labels[i],
      metric: r.metric,
      color: COLORS[i % COLORS.length],
      total: r.total,
      points: (r.series[0] ? r.series[0].points : []).map((p) => ({ t: new Date(p.t), v: p.v, live: p.live })),
    }));
    sec.dataset.total = String(series[0].total);
    sec.dataset.source = results[0].source;
    sec.dataset.points = String(series[0].points.length);
    const anyLive = series.some((s) => s.points.some((p) => p.live));
    const rows = series[0].points.map((p, i) => [lab.full(p.t), ...series.map((s) => num(s.points[i].v))]);
    const liveRows = series[0].points.map((p, i) => series.some((s) => s.points[i].live));
    fill(sec, csvLink('/api/series', { ...base, metric: def.metrics[0], step: st.stepUsed }),
      el('div', { class: 'totals' }, series.map((s) => total(s.label + ' ', s.total, { 'data-metric': s.metric }, series.length > 1 ? s.color : null))),
      el('div', { class: 'plot' }, lineChart(series, lab)),
      series.length > 1 || anyLive ? legend([
        ...(series.length > 1 ? series.map((s) => ({ label: s.label, color: s.color })) : []),
        ...(anyLive ? [{ label: 'hollow points include counters not flushed yet', color: '#fff' }] : []),
      ]) : null,
      table(['Time (' + results[0].tz + ')', ...series.map((s) => s.label)], rows, liveRows));
  }

  async function loadFunnel(def, st, base) {
    const sec = card(def);
    const params = { from: base.from, to: base.to, tz: base.tz, app: base.app, live: base.live };
    const r = await api('/api/funnel', params);
    const first = r.steps[0] ? r.steps[0].value : 0;
    sec.dataset.total = String(first);
    // A percentage is shown only as a part of a total that includes it,
    // and says which (never over 100 %).
    const share = (s) => (s.base ? pct(s.share) : '');
    const bars = r.steps.map((s) => ({
      label: FUNNEL_LABELS[s.metric] || s.metric,
      value: s.value,
      note: share(s),
      color: s.metric === 'push_failed' ? '#dc2626' : s.metric === 'reminders_sent' ? '#16a34a' : COLORS[0],
    }));
    const bases = [...new Set(r.steps.filter((s) => s.base).map((s) => s.base))];
    fill(sec, csvLink('/api/funnel', params),
      el('div', { class: 'totals' }, r.steps.map((s) => total((FUNNEL_LABELS[s.metric] || s.metric) + ' ', s.value, { 'data-metric': s.metric }))),
      el('div', { class: 'plot' }, barChart(bars)),
      el('p', { class: 'note' }, 'Percentages: ' + bases.map((b) => 'of ' + b).join('; ') + '. Reminders scheduled count every stage of the ladder: no percentage.'),
      table(['Step', 'Count', 'Share', 'Of'], r.steps.map((s) => [FUNNEL_LABELS[s.metric] || s.metric, num(s.value),
        el('output', { class: 'share', 'data-metric': s.metric, 'data-value': s.share.toFixed(4), 'data-base': s.base }, s.base ? pct(s.share) : '–'),
        s.base || '']),
      r.steps.map((s) => s.live)));
  }

  // loadEffect shows what reminders did, per stage of the ladder: pushed,
  // opened (the app reported it), converted (the conversation read within
  // the conversion window), the rates of the pushes, and the median time
  // from push to read.
  async function loadEffect(def, st, base) {
    const sec = card(def);
    const params = { from: base.from, to: base.to, tz: base.tz, app: base.app, platform: base.platform, live: base.live };
    const r = await api('/api/effectiveness', params);
    const pushed = r.stages.reduce((a, s) => a + s.pushed, 0);
    sec.dataset.total = String(pushed);
    const dur = (s) => (s < 0 ? '–' : s < 90 ? Math.round(s) + ' s' : s < 5400 ? Math.round(s / 60) + ' min' : (s / 3600).toFixed(1) + ' h');
    const groups = r.stages.map((s) => ({
      label: 'stage ' + s.stage,
      note: s.pushed ? pct(s.conversion_rate) + ' converted' : '',
      bars: [
        { label: 'pushed', value: s.pushed, color: COLORS[0] },
        { label: 'opened', value: s.opened, color: COLORS[1] },
        { label: 'converted', value: s.converted, color: '#16a34a' },
      ],
    }));
    const rate = (s, kind, v) => el('output', { class: 'rate', 'data-stage': s.stage, 'data-kind': kind, 'data-value': v.toFixed(4) }, s.pushed ? pct(v) : '–');
    fill(sec, csvLink('/api/effectiveness', params),
      el('div', { class: 'totals' },
        total('pushed ', pushed, { 'data-metric': 'reminders_pushed' }, COLORS[0]),
        total('opened ', r.stages.reduce((a, s) => a + s.opened, 0), { 'data-metric': 'reminders_opened' }, COLORS[1]),
        total('converted ', r.stages.reduce((a, s) => a + s.converted, 0), { 'data-metric': 'reminders_converted' }, '#16a34a')),
      r.stages.length
        ? el('div', { class: 'plot' }, groupedBars(groups, ['pushed', 'opened', 'converted']))
        : el('div', { class: 'plot' }, el('svg', { viewBox: '0 0 640 60', role: 'img' }, el('text', { class: 'empty', x: 320, y: 34, 'text-anchor': 'middle' }, 'No reminder pushed in this range'))),
      el('p', { class: 'note' }, 'Rates are of the reminders of the stage pushed in the range (at most 100 %: an open or read of a reminder pushed before the range counts too). Converted: the conversation was read within the conversion window after the push.'),
      table(['Stage', 'Pushed', 'Opened', 'Open rate', 'Converted', 'Conversion rate', 'Median push → read'],
        r.stages.map((s) => ['stage ' + s.stage, num(s.pushed), num(s.opened), rate(s, 'open', s.open_rate), num(s.converted),
          rate(s, 'conversion', s.conversion_rate), el('output', { class: 'median', 'data-stage': s.stage, 'data-value': s.median_read_seconds }, dur(s.median_read_seconds))]),
        r.stages.map((s) => s.live), 'Stages'));
  }

  async function loadPush(def, st, base) {
    const sec = card(def);
    const params = { from: base.from, to: base.to, tz: base.tz, app: base.app, platform: base.platform, live: base.live };
    const r = await api('/api/push', params);
    const sent = r.platforms.reduce((a, p) => a + p.sent, 0);
    const failed = r.platforms.reduce((a, p) => a + p.failed, 0);
    sec.dataset.total = String(sent);
    sec.dataset.failed = String(failed);
    const groups = r.platforms.map((p) => ({
      label: p.platform || '(none)',
      note: p.sent + p.failed ? pct(p.success_rate) + ' ok' : '',
      bars: [
        { label: 'sent', value: p.sent, color: '#16a34a' },
        { label: 'failed', value: p.failed, color: '#dc2626' },
        { label: 'tokens removed', value: p.tokens_removed, color: '#d97706' },
      ],
    }));
    fill(sec, csvLink('/api/push', params),
      el('div', { class: 'totals' },
        total('sent ', sent, { 'data-metric': 'push_sent' }, '#16a34a'),
        total('failed ', failed, { 'data-metric': 'push_failed' }, '#dc2626'),
        r.platforms.map((p) => el('span', {}, (p.platform || '(none)') + ' success',
          el('output', { class: 'rate', 'data-platform': p.platform, 'data-sent': p.sent, 'data-failed': p.failed, 'data-value': p.success_rate.toFixed(4) },
            p.sent + p.failed ? pct(p.success_rate) : '–')))),
      el('div', { class: 'plot' }, groupedBars(groups, ['sent', 'failed', 'tokens removed'])),
      legend([{ label: 'sent', color: '#16a34a' }, { label: 'failed', color: '#dc2626' }, { label: 'tokens removed', color: '#d97706' }]),
      table(['Platform', 'Sent', 'Failed', 'Tokens removed', 'Success'],
        r.platforms.map((p) => [p.platform || '(none)', num(p.sent), num(p.failed), num(p.tokens_removed), p.sent + p.failed ? pct(p.success_rate) : '–']),
        r.platforms.map((p) => p.live), 'Platforms'),
      r.failures.length ? table(['Failure', 'Platform', 'Count'], r.failures.map((f) => [f.reason || '(none)', f.platform || '(none)', num(f.count)]), null, 'Failures by reason') : null);
  }

  async function loadDAU(def, st, base) {
    const sec = card(def);
    const params = { from: base.from, to: base.to, tz: base.tz, app: base.app };
    const r = await api('/api/dau', params);
    const g = r.series[0] || { points: [], peak: 0, latest: 0 };
    sec.dataset.total = String(g.peak);
    const series = [{
      label: 'active users', color: COLORS[3],
      points: g.points.map((p) => ({ t: new Date(p.day + 'T00:00:00Z'), v: p.users, live: false })),
    }];
    const lab = labeler('day', 'UTC');
    fill(sec, csvLink('/api/dau', params),
      el('div', { class: 'totals' },
        total('peak ', g.peak, { 'data-key': 'peak' }),
        total('latest day ', g.latest, { 'data-key': 'latest' })),
      el('div', { class: 'plot' }, lineChart(series, lab)),
      table(['Day (UTC)', 'Users'], g.points.map((p) => [p.day, num(p.users)])));
  }

  // loadDeadLetters shows the entries ingest could not apply, by reason:
  // each is in its shard's dead-letter stream (the deadletter command
  // lists, shows, replays and drops them).
  async function loadDeadLetters(def, st, base) {
    const sec = card(def);
    const params = { metric: 'dead_lettered', group: 'reason', from: base.from, to: base.to, tz: base.tz, app: base.app, live: base.live };
    const r = await api('/api/totals', params);
    const rows = r.totals.filter((t) => t.value > 0).sort((a, b) => b.value - a.value);
    const sum = rows.reduce((a, t) => a + t.value, 0);
    sec.dataset.total = String(sum);
    const plot = rows.length
      ? barChart(rows.map((t) => ({ label: t.key || '(none)', value: t.value, color: '#dc2626' })))
      : el('svg', { viewBox: '0 0 640 60', role: 'img' }, el('text', { class: 'empty', x: 320, y: 34, 'text-anchor': 'middle' }, 'No bad input in this range'));
    fill(sec, csvLink('/api/totals', params),
      el('div', { class: 'totals' }, total('dead letters ', sum, { 'data-metric': 'dead_lettered' }, '#dc2626')),
      el('div', { class: 'plot' }, plot),
      table(['Reason', 'What it means', 'Entries'], rows.map((t) => [t.key || '(none)', DEAD_REASONS[t.key] || '', num(t.value)]),
        rows.map((t) => t.live), 'Reasons'));
  }

  const LOADERS = { series: loadSeries, funnel: loadFunnel, effect: loadEffect, push: loadPush, dau: loadDAU, deadletters: loadDeadLetters };

  // The header's role indicator: which role this session holds, and so
  // whether the queues UI can change tasks (data-role on #role).
  async function loadSession() {
    const box = document.getElementById('role');
    try {
      const r = await api('/api/session', {});
      const how = { open: 'no sign-in (loopback)', bearer: 'token', basic: 'basic auth', session: 'signed in' }[r.auth] || r.auth;
      const queues = r.queues === 'off' ? '' : ` · queues ${r.queues}`;
      // Only a session cookie can be signed out of here: basic auth is
      // sent by the browser until it closes, and without auth there is
      // nothing to sign out of.
      const out = document.getElementById('signout');
      if (out && r.auth === 'basic') out.replaceWith(el('span', { class: 'signout-note', id: 'signout' }, 'basic auth: close the browser to sign out'));
      else if (out && r.auth !== 'session') out.remove();
      box.dataset.role = r.role;
      box.title = `Role of this session (${how})`;
      box.textContent = `${r.role}${queues}`;
    } catch (e) { box.textContent = ''; }
  }

  async function loadDimensions(st) {
    try {
      const r = await api('/api/dimensions', { from: st.from, to: st.to, tz: st.tz });
      document.getElementById('apps').replaceChildren(...r.apps.map((a) => el('option', { value: a })));
      const sel = form.platform;
      for (const p of r.platforms) if (![...sel.options].some((o) => o.value === p)) sel.append(el('option', { value: p }, p));
    } catch (e) { /* the pickers stay as they are */ }
  }

  async function load() {
    const gen = ++generation;
    clearTimeout(timer);
    const st = readForm();
    st.stepUsed = resolveStep(st);
    writeURL(st);
    document.body.dataset.state = 'loading';
    statusBox.className = 'status';
    statusBox.textContent = 'Loading…';
    const base = { from: st.from, to: st.to, tz: st.tz, app: st.app, platform: st.platform, live: st.live };
    loadDimensions(st);
    const results = await Promise.allSettled(CHARTS.map(async (def) => {
      try {
        await LOADERS[def.kind](def, st, base);
        document.getElementById('chart-' + def.id).dataset.state = 'ready';
      } catch (e) {
        const sec = card(def);
        sec.dataset.state = 'error';
        fill(sec, '#', el('p', { class: 'message', role: 'alert' }, e.message));
        throw e;
      }
    }));
    if (gen !== generation) return;
    const failed = results.filter((r) => r.status === 'rejected');
    const now = new Date().toLocaleTimeString('en-GB', { hour12: false });
    if (failed.length) {
      statusBox.className = 'status error';
      statusBox.textContent = `${failed.length} chart(s) failed: ${failed[0].reason.message}`;
    } else {
      statusBox.textContent = `Updated ${now} · step ${st.stepUsed} · ${st.tz}${st.live ? ' · live, refreshing every 15 s' : ''}`;
    }
    document.body.dataset.state = failed.length ? 'error' : 'ready';
    if (st.live) timer = setTimeout(load, LIVE_REFRESH_MS);
  }

  // ------------------------------------------------------------ wiring

  form.range.addEventListener('change', () => {
    const p = PRESETS[form.range.value];
    if (p) { form.from.value = p[0]; form.to.value = p[1]; load(); }
  });
  for (const name of ['from', 'to']) {
    form[name].addEventListener('input', () => { form.range.value = 'custom'; });
  }
  for (const name of ['step', 'platform', 'live']) form[name].addEventListener('change', load);
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });

  for (const def of CHARTS) card(def);
  writeForm(readURL());
  loadSession();
  load();
})();
