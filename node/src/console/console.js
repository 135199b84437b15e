// The node's web console: polls /cluster, /metrics and /logs every POLL_MS and draws
// what they say. No library, nothing from the network but this node. Every text that
// comes from the cluster (names, chat messages, log lines) is set as text, never as HTML.
'use strict';

const POLL_MS = 2000;
const HISTORY = 150; // samples kept: five minutes at one per two seconds
const MAX_LOG_LINES = 300;
const MAX_EVENTS = 60;
const READ_OPS = new Set(['get', 'history', 'list_users', 'list_channels']);
const PROTOCOL_KINDS = ['prepare', 'promise', 'accept', 'accepted', 'decide', 'nack',
  'heartbeat', 'forward', 'fetch', 'decided', 'fetch_snapshot', 'snapshot_chunk',
  'read_index', 'read_indexed', 'confirm', 'confirmed'];

// ---- errors: shown on the page and counted on <body>, for people and for the browser test
const errors = [];
function reportError(message) {
  errors.push(String(message));
  const box = document.getElementById('js-errors');
  box.textContent = errors.slice(-10).join('\n');
  box.hidden = false;
  document.body.dataset.jsErrors = String(errors.length);
}
window.addEventListener('error', (e) => reportError(`${e.message} (${e.filename}:${e.lineno})`));
window.addEventListener('unhandledrejection', (e) =>
  reportError(`unhandled: ${e.reason && e.reason.message ? e.reason.message : e.reason}`));

// ---- small DOM helpers
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
function setProblem(text) {
  const box = document.getElementById('problem');
  box.textContent = text || '';
  box.hidden = !text;
}

// ---- Prometheus text: [{name, labels, value}]
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space < 0) continue;
    const head = line.slice(0, space);
    const value = Number(line.slice(space + 1));
    if (!Number.isFinite(value) && line.slice(space + 1) !== '+Inf') continue;
    const brace = head.indexOf('{');
    const name = brace < 0 ? head : head.slice(0, brace);
    const labels = {};
    if (brace >= 0) {
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let m;
      while ((m = re.exec(head.slice(brace))) !== null) labels[m[1]] = m[2];
    }
    samples.push({ name, labels, value });
  }
  return samples;
}
function total(samples, name, keep) {
  let sum = 0;
  for (const s of samples) if (s.name === name && (!keep || keep(s.labels))) sum += s.value;
  return sum;
}
function buckets(samples, base) {
  return samples
    .filter((s) => s.name === `${base}_bucket`)
    .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
}
// The q-quantile of what a histogram observed between two scrapes, interpolated within
// its bucket (as Prometheus' histogram_quantile does); null when nothing was observed.
function quantile(q, now, before) {
  if (!before || now.length === 0 || now.length !== before.length) return null;
  const delta = now.map((b, i) => ({ le: b.le, count: b.count - before[i].count }));
  const count = delta[delta.length - 1].count;
  if (!(count > 0)) return null;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const b of delta) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + (b.le - lower) * ((rank - below) / inBucket) : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}

// ---- charts: a few series over time on a canvas
class Chart {
  constructor(id, series) {
    this.canvas = document.getElementById(id);
    this.series = series; // [{name, color}]
    this.points = []; // [{t, values: [..]}]
  }
  push(t, values) {
    this.points.push({ t, values });
    if (this.points.length > HISTORY) this.points.shift();
    const first = this.points.map((p) => p.values[0]).filter((v) => v !== null);
    this.canvas.dataset.samples = String(this.points.length);
    this.canvas.dataset.max = String(first.length ? Math.max(...first) : 0);
    this.canvas.dataset.last = String(values[0] === null ? '' : values[0]);
    this.draw();
  }
  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(100, canvas.clientWidth);
    const height = Math.max(60, canvas.clientHeight);
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const left = 46;
    const top = 8;
    const plotW = width - left - 8;
    const plotH = height - top - 18;
    let max = 0;
    for (const p of this.points) for (const v of p.values) if (v !== null && v > max) max = v;
    max = niceCeiling(max);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#6b7683';
    g.strokeStyle = '#e1e5ea';
    g.lineWidth = 1;
    for (let i = 0; i <= 2; i++) {
      const y = top + plotH - (plotH * i) / 2;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(left + plotW, y);
      g.stroke();
      g.fillText(formatNumber((max * i) / 2), 2, y + 4);
    }
    const span = (HISTORY - 1) * POLL_MS;
    const tEnd = this.points.length ? this.points[this.points.length - 1].t : 0;
    g.fillText(`${Math.round(span / 60000)} min`, left, height - 3);
    this.series.forEach((s, index) => {
      g.strokeStyle = s.color;
      g.lineWidth = 1.6;
      g.beginPath();
      let drawing = false;
      for (const p of this.points) {
        const v = p.values[index];
        if (v === null) {
          drawing = false;
          continue;
        }
        const x = left + plotW - ((tEnd - p.t) / span) * plotW;
        const y = top + plotH - (max > 0 ? (v / max) * plotH : 0);
        if (drawing) g.lineTo(x, y);
        else g.moveTo(x, y);
        drawing = true;
      }
      g.stroke();
    });
    if (this.series.length > 1) {
      let x = left + 6;
      for (const s of this.series) {
        g.fillStyle = s.color;
        g.fillText(s.name, x, top + 10);
        x += g.measureText(s.name).width + 12;
      }
    }
  }
}
function niceCeiling(x) {
  if (!(x > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= x) return step * power;
  return 10 * power;
}
function formatNumber(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (x >= 1000) return `${(x / 1000).toFixed(x >= 10000 ? 0 : 1)}k`;
  if (x >= 10) return x.toFixed(0);
  if (x >= 1) return x.toFixed(1);
  return x.toFixed(2);
}

const charts = {
  writes: new Chart('chart-writes', [{ name: 'writes', color: '#2f5fd0' }]),
  reads: new Chart('chart-reads', [{ name: 'reads', color: '#0b7a3b' }]),
  latency: new Chart('chart-latency', [{ name: 'p50', color: '#2f5fd0' }, { name: 'p99', color: '#b3261e' }]),
  fsync: new Chart('chart-fsync', [{ name: 'p50', color: '#2f5fd0' }, { name: 'p99', color: '#b3261e' }]),
  batch: new Chart('chart-batch', [{ name: 'mean', color: '#7a4fd0' }]),
  elections: new Chart('chart-elections', [{ name: 'elections', color: '#a35c00' }, { name: 'leads', color: '#0b7a3b' }]),
};

// ---- state between polls
let previous = null; // {t, samples}
let lastLogSeq = 0;
const logLines = [];
const events = [];
let lastLeader;

function addEvent(text) {
  events.push({ time: new Date(), text });
  if (events.length > MAX_EVENTS) events.shift();
  const list = document.getElementById('events');
  clear(list);
  for (const e of events.slice().reverse()) {
    const item = el('li');
    item.append(el('span', e.time.toLocaleTimeString(), 'muted'), ' ', e.text);
    list.append(item);
  }
}

// ---- the cluster table
function renderCluster(view) {
  const self = view.this;
  document.getElementById('node-name').textContent = self.node;
  document.title = `${self.node} · paxos-zmq`;
  const pill = document.getElementById('role-pill');
  pill.textContent = self.role;
  pill.className = `pill ${self.role}`;
  const rows = [{ name: self.node, status: self, addr: location.host, error: null }];
  for (const peer of view.peers) {
    rows.push({
      name: peer.node || (peer.status && peer.status.node) || `rank ${peer.rank}`,
      status: peer.status,
      addr: peer.status_addr,
      error: peer.error,
      rank: peer.rank,
    });
  }
  rows.sort((a, b) => (a.status ? a.status.rank : a.rank) - (b.status ? b.status.rank : b.rank));
  const applied = rows.filter((r) => r.status).map((r) => r.status.applied_slot);
  const best = applied.length ? Math.max(...applied) : 0;
  // Replicas at the same slot must have the same digest.
  const digestAt = new Map();
  for (const r of rows) {
    if (!r.status) continue;
    const seen = digestAt.get(r.status.applied_slot) || new Set();
    seen.add(r.status.digest);
    digestAt.set(r.status.applied_slot, seen);
  }
  const body = document.querySelector('#nodes tbody');
  clear(body);
  let leaders = 0;
  let disagree = false;
  for (const r of rows) {
    const tr = el('tr');
    tr.dataset.node = r.name;
    const s = r.status;
    if (!s) {
      tr.dataset.role = 'unreachable';
      tr.className = 'down';
      tr.append(el('td', r.name), el('td', r.rank), el('td', 'unreachable'));
      const why = el('td', r.error || '');
      why.colSpan = 8;
      tr.append(why);
      body.append(tr);
      continue;
    }
    tr.dataset.role = s.role;
    if (s.role === 'leader') leaders += 1;
    const differs = digestAt.get(s.applied_slot).size > 1;
    disagree = disagree || differs;
    const digest = el('td');
    digest.append(el('code', s.digest.slice(0, 12)));
    if (differs) digest.className = 'differs';
    const link = el('td');
    if (r.addr) {
      const a = el('a', r.addr);
      a.href = `http://${r.addr}/`;
      link.append(a);
    }
    tr.append(
      el('td', s.node), el('td', s.rank), el('td', s.role), el('td', s.ballot || '–'),
      el('td', s.applied_slot), el('td', best - s.applied_slot), digest,
      el('td', `${s.clock_offset_ms} ms`), el('td', s.pending_requests),
      el('td', s.ready ? 'yes' : 'no'), link,
    );
    body.append(tr);
  }
  const table = document.getElementById('nodes');
  table.dataset.nodes = String(rows.length);
  table.dataset.leaders = String(leaders);
  document.getElementById('agreement').textContent = disagree
    ? 'DIGESTS DIFFER at the same slot: the replicas disagree.'
    : `${rows.filter((r) => r.status).length} of ${rows.length} nodes answer; ${leaders} leader${leaders === 1 ? '' : 's'}; digests agree at every shared slot.`;
  const leader = self.leader_node || null;
  if (lastLeader !== undefined && leader !== lastLeader) {
    addEvent(leader ? `${leader} leads (ballot ${self.ballot || '?'})` : 'no leader known');
  } else if (lastLeader === undefined) {
    addEvent(leader ? `${leader} leads (ballot ${self.ballot || '?'}) when this page opened` : 'no leader known yet');
  }
  lastLeader = leader;
  renderFabric(self);
  renderChannels(self.channels || []);
}

function renderFabric(self) {
  const list = document.getElementById('fabric');
  clear(list);
  const add = (term, value) => list.append(el('dt', term), el('dd', value));
  const proxies = self.proxies && self.proxies.length ? self.proxies : [self.proxy];
  for (const proxy of proxies) add('proxy', proxy === self.proxy ? `${proxy} (publishing through it)` : `${proxy} (standby)`);
  for (const broker of self.brokers || []) {
    const ago = broker.last_request_ms_ago;
    add('broker', `${broker.endpoint}: ${ago === null || ago === undefined ? 'no request yet' : `last request ${formatAgo(ago)} ago`}`);
  }
  add('reference', self.registered
    ? `registered, last answer ${self.reference_last_reply_ms_ago ?? '?'} ms ago`
    : 'not answering: serving with the membership it knows');
  add('cluster key ids', (self.auth && self.auth.key_ids ? self.auth.key_ids.join(', ') : '–'));
  add('frames refused', self.auth ? String(self.auth.rejected) : '–');
  if (self.auth && self.auth.last_rejected) add('last refused', self.auth.last_rejected);
  add('decided / truncated', `${self.decided_slot} / ${self.truncated_slot}`);
  add('in flight / buffered', `${self.in_flight_slots} slots / ${self.pending_commands} commands`);
  add('store.json slot', String(self.snapshot_slot));
}

function formatAgo(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60000)} min`;
}

function renderChannels(channels) {
  const box = document.getElementById('channels');
  clear(box);
  if (channels.length === 0) {
    box.append(el('p', 'no channel yet (bots chat makes some)', 'muted'));
    return;
  }
  for (const c of channels) {
    const div = el('div', null, 'channel');
    div.append(el('h3', `#${c.name} · ${c.subscribers} subscriber${c.subscribers === 1 ? '' : 's'}`));
    if (c.messages.length === 0) div.append(el('p', 'no message yet', 'muted'));
    for (const m of c.messages) {
      const p = el('p');
      p.append(el('strong', m.from), `: ${m.text}`);
      div.append(p);
    }
    box.append(div);
  }
}

// ---- metrics: rates and percentiles between two scrapes
function renderMetrics(samples, t) {
  const before = previous;
  previous = { t, samples };
  if (!before) return;
  const seconds = (t - before.t) / 1000;
  if (!(seconds > 0)) return;
  const rate = (name, keep) => Math.max(0, (total(samples, name, keep) - total(before.samples, name, keep)) / seconds);
  const ok = (read) => (l) => l.result === 'ok' && READ_OPS.has(l.op) === read && l.op !== 'noop';
  charts.writes.push(t, [rate('paxos_requests_total', ok(false))]);
  charts.reads.push(t, [rate('paxos_requests_total', ok(true))]);
  const ms = (x) => (x === null ? null : x * 1000);
  const latencyNow = buckets(samples, 'paxos_request_seconds');
  const latencyBefore = buckets(before.samples, 'paxos_request_seconds');
  charts.latency.push(t, [ms(quantile(0.5, latencyNow, latencyBefore)), ms(quantile(0.99, latencyNow, latencyBefore))]);
  const fsyncNow = buckets(samples, 'paxos_wal_fsync_seconds');
  const fsyncBefore = buckets(before.samples, 'paxos_wal_fsync_seconds');
  charts.fsync.push(t, [ms(quantile(0.5, fsyncNow, fsyncBefore)), ms(quantile(0.99, fsyncNow, fsyncBefore))]);
  const slots = total(samples, 'paxos_batch_commands_count') - total(before.samples, 'paxos_batch_commands_count');
  const commands = total(samples, 'paxos_batch_commands_sum') - total(before.samples, 'paxos_batch_commands_sum');
  charts.batch.push(t, [slots > 0 ? commands / slots : null]);
  const elections = total(samples, 'paxos_elections_total') - total(before.samples, 'paxos_elections_total');
  const leads = total(samples, 'paxos_leaderships_total') - total(before.samples, 'paxos_leaderships_total');
  charts.elections.push(t, [elections, leads]);
  if (elections > 0) addEvent(`this node started ${elections} election${elections === 1 ? '' : 's'}`);
  const body = document.querySelector('#protocol tbody');
  clear(body);
  for (const kind of PROTOCOL_KINDS) {
    const perSecond = (direction) => rate('paxos_protocol_messages_total', (l) => l.kind === kind && l.direction === direction);
    const inbound = perSecond('in');
    const outbound = perSecond('out');
    const count = (direction) => total(samples, 'paxos_protocol_messages_total', (l) => l.kind === kind && l.direction === direction);
    const tr = el('tr');
    tr.dataset.kind = kind;
    tr.append(
      el('td', kind), el('td', formatNumber(inbound)), el('td', formatNumber(outbound)),
      el('td', formatNumber(count('in'))), el('td', formatNumber(count('out'))),
    );
    body.append(tr);
  }
}

// ---- the log
function renderLogs(logs) {
  if (logs.next_seq <= lastLogSeq) {
    // The node restarted: its lines are numbered from 1 again.
    lastLogSeq = 0;
    logLines.length = 0;
    addEvent('the node restarted: its log starts again');
  }
  const lines = logs.lines;
  if (lines.length === 0) return;
  for (const line of lines) {
    logLines.push(line);
    lastLogSeq = Math.max(lastLogSeq, line.seq);
  }
  while (logLines.length > MAX_LOG_LINES) logLines.shift();
  const pre = document.getElementById('log');
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
  clear(pre);
  for (const line of logLines) {
    const time = new Date(line.unix_ms).toISOString().slice(11, 23);
    pre.append(el('span', `${time} ${line.level.padEnd(5)} ${line.target}: ${line.text}\n`, line.level));
  }
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- the loop
async function fetchOk(path, as) {
  const response = await fetch(path, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return as === 'json' ? response.json() : response.text();
}

async function poll() {
  const t = performance.now();
  const [cluster, metrics, logs] = await Promise.allSettled([
    fetchOk('/cluster', 'json'),
    fetchOk('/metrics', 'text'),
    fetchOk(`/logs?after=${lastLogSeq}`, 'json'),
  ]);
  const failed = [cluster, metrics, logs].filter((r) => r.status === 'rejected');
  setProblem(failed.length ? `this node does not answer: ${failed[0].reason.message}` : '');
  if (cluster.status === 'fulfilled') renderCluster(cluster.value);
  if (metrics.status === 'fulfilled') renderMetrics(parseMetrics(metrics.value), t);
  if (logs.status === 'fulfilled') renderLogs(logs.value);
  document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
}

async function loop() {
  try {
    await poll();
  } catch (e) {
    reportError(e && e.stack ? e.stack : e);
  }
  setTimeout(loop, POLL_MS);
}
window.addEventListener('resize', () => Object.values(charts).forEach((c) => c.draw()));
loop();
