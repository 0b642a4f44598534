// streamgate dashboard: plain JS, no build step. Polls the admin API every POLL_MS with the
// admin token the operator typed (kept in sessionStorage), and plays streams through the gateway
// with mpegts.js (HTTP-FLV, WebSocket-FLV), hls.js (HLS) or the video element itself (MP4).
// Everything shown comes from the API and is set as text, never parsed as HTML.
'use strict';

const POLL_MS = 1500;
/** Players open at once, at most (each holds a connection and a decoder). */
const MAX_PLAYERS = 12;
const TOKEN_KEY = 'streamgate.admin_token';
const VIEWER_KEY = 'streamgate.viewer_token';

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  routes: [],
  players: { 'mpegts.js': false, 'hls.js': false },
  selected: null,
  timer: null,
  tiles: [],
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(path) {
  const r = await fetch(path, {
    headers: { Authorization: `Bearer ${state.token}` },
    cache: 'no-store',
  });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
  }
  for (const c of children) e.append(c);
  return e;
}

function fmtBits(bps) {
  if (bps == null) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kbit/s`;
  return `${bps.toFixed(0)} bit/s`;
}

function fmtBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

function fmtSecs(ms) {
  const s = Math.floor(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

// ---- login ----

function showLogin(message) {
  stopPolling();
  $('dash').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('status').textContent = '';
}

async function login(token) {
  state.token = token;
  try {
    const ui = await api('/api/v1/ui');
    const routes = await api('/api/v1/routes');
    state.routes = routes.routes || [];
    state.players = ui.players || state.players;
    const viewer = sessionStorage.getItem(VIEWER_KEY) ?? ui.viewer_token ?? '';
    $('viewer-token').value = viewer;
    const rest = state.routes.find((r) => !r.stream && r.path.endsWith('{*rest}')
      && r.action !== 'redirect');
    if (rest) $('play-url').placeholder = rest.path.replace('{*rest}', 'movie.mp4');
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = '';
    if (e.status === 401) return showLogin('That admin token was refused (401).');
    if (e.code === 'disabled') return showLogin('The admin API is off: set [admin] token in the config.');
    return showLogin(`Cannot reach the admin API: ${e.message}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('dash').hidden = false;
  $('logout').hidden = false;
  startPolling();
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  for (const t of [...state.tiles]) t.close();
  showLogin('');
}

// ---- polling ----

function startPolling() {
  stopPolling();
  const tick = async () => {
    try {
      await refresh();
      $('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
      $('status').className = 'muted';
    } catch (e) {
      if (e.status === 401) return showLogin('The admin token is no longer accepted.');
      $('status').textContent = `update failed: ${e.message}`;
      $('status').className = 'error';
    }
    state.timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  clearTimeout(state.timer);
  state.timer = null;
}

async function refresh() {
  const [nodes, streams, live] = await Promise.all([
    api('/api/v1/nodes'), api('/api/v1/streams'), api('/api/v1/live'),
  ]);
  renderNodes(nodes.nodes || []);
  // Viewers and ingest bitrate per stream, summed over its pulls (one per node source and
  // path). The rate is the gateway's own sample (`bytes_per_second`), 0 until its first one.
  const perStream = new Map();
  for (const s of live.streams || []) {
    const agg = perStream.get(s.stream) || { viewers: 0, bps: null };
    agg.viewers += s.viewers;
    if (s.bytes_per_second > 0) agg.bps = (agg.bps || 0) + s.bytes_per_second * 8;
    perStream.set(s.stream, agg);
  }
  renderStreams(streams.streams || [], perStream);
  $('totals').textContent = `(${live.viewers || 0} live viewers, ${(live.streams || []).length} pulls)`;
  if (state.selected) await renderDetail(state.selected);
}

/**
 * Updates a table body in place, one row per item by key: rows are kept (so a click or a
 * selection is not lost to the next poll), added, removed and reordered as the items say.
 */
function syncRows(tbody, items, key, create, update) {
  const old = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  let prev = null;
  for (const item of items) {
    const k = key(item);
    let row = old.get(k);
    old.delete(k);
    if (!row) {
      row = create(item);
      row.dataset.key = k;
    }
    update(row, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (row !== want) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const r of old.values()) r.remove();
}

function setText(cell, text, cls) {
  if (cell.textContent !== text) cell.textContent = text;
  if (cls !== undefined && cell.className !== cls) cell.className = cls;
}

function renderNodes(nodes) {
  syncRows($('nodes').tBodies[0], nodes, (n) => n.id,
    (n) => el('tr', { 'data-node': n.id }, el('td', { text: n.id }), el('td'), el('td'), el('td')),
    (row, n) => {
      const h = n.health || { state: 'up' };
      let text = h.state.replace('_', ' ');
      if (h.consecutive_fails) text += `, ${h.consecutive_fails} failures`;
      if (h.checked) text += ' (checked)';
      const c = row.cells;
      setText(c[1], n.url);
      setText(c[2], n.up ? 'up' : 'expired', n.up ? 'up' : 'down');
      setText(c[3], text, h.state === 'up' ? 'up' : 'down');
      row.title = h.last_error || '';
    });
}

function renderStreams(streams, perStream) {
  syncRows($('streams').tBodies[0], streams, (s) => s.name,
    (s) => el('tr', { 'data-stream': s.name, onclick: () => select(s.name) },
      el('td', { text: s.name }),
      el('td'),
      el('td', { class: 'num viewers' }),
      el('td', { class: 'num bitrate' }),
      el('td', {}, ...playButtons(s.name))),
    (row, s) => {
      const agg = perStream.get(s.name) || { viewers: 0, bps: null };
      const c = row.cells;
      setText(c[1], s.nodes.map((n) => (s.up_nodes.includes(n) ? n : `${n} (down)`)).join(', '));
      setText(c[2], String(agg.viewers));
      setText(c[3], fmtBits(agg.bps));
      row.classList.toggle('selected', s.name === state.selected);
    });
}

function select(name) {
  state.selected = name;
  for (const r of $('streams').tBodies[0].rows) r.classList.toggle('selected', r.dataset.stream === name);
  $('detail').hidden = false;
  $('detail-name').textContent = name;
  renderDetail(name).catch(() => {});
}

/**
 * A stream's viewers as rows of { pull, id, client, connected_ms, bytes }, from
 * `GET /api/v1/streams/{name}/viewers` (the admin API's viewer list).
 */
async function viewersOf(name) {
  let d;
  try {
    d = await api(`/api/v1/streams/${encodeURIComponent(name)}/viewers`);
  } catch (e) {
    // A stream the registry does not know yet: no viewers, same as the other list says.
    if (e.code === 'stream_not_found') return [];
    throw e;
  }
  return (d.viewers || []).map((v) => ({
    pull: [v.node, v.upstream_path].filter(Boolean).join(' '),
    id: v.id,
    client: [v.client, v.protocol].filter(Boolean).join(' '),
    connected_ms: (v.connected_s ?? 0) * 1000,
    bytes: v.bytes ?? 0,
  }));
}

async function renderDetail(name) {
  const list = await viewersOf(name);
  if (state.selected !== name) return;
  const rows = list.map((v) => el('tr', {},
    el('td', { text: v.pull }),
    el('td', { class: 'num', text: `#${v.id}` }),
    el('td', { text: v.client }),
    el('td', { class: 'num', text: fmtSecs(v.connected_ms) }),
    el('td', { class: 'num', text: fmtBytes(v.bytes) })));
  $('viewers').tBodies[0].replaceChildren(...rows);
  $('detail-empty').hidden = rows.length > 0;
}

// ---- play URLs ----

/** Fills a route pattern for `stream`; `null` when it has captures we cannot fill. */
function fill(path, stream, rest) {
  let p = path.replaceAll('{stream}', encodeURIComponent(stream));
  if (rest !== undefined) p = p.replace(/\{\*[A-Za-z_][A-Za-z0-9_]*\}$/, rest);
  return /\{/.test(p) ? null : p;
}

/** The viewer credential a route needs, as a query parameter (`null`: none needed). */
function credential(route) {
  const v = $('viewer-token').value.trim();
  switch (route.auth) {
    case 'none': return null;
    case 'token': case 'hook': return v ? `token=${encodeURIComponent(v)}` : null;
    case 'jwt': return v ? `jwt=${encodeURIComponent(v)}` : null;
    default: return undefined; // signed / secure_link: paste a URL from `streamgate sign`
  }
}

function withCredential(path, route) {
  const c = credential(route);
  if (c === undefined) {
    throw new Error(`${route.path} needs a signed URL (auth = "${route.auth}"): make one with `
      + '`streamgate sign` and paste it into the URL field');
  }
  return c ? `${path}${path.includes('?') ? '&' : '?'}${c}` : path;
}

const viewable = (r) => r.action !== 'redirect';

/** Play URLs for a stream by kind, from the route table. */
function playUrls(stream) {
  const out = {};
  const flv = state.routes.find((r) => viewable(r) && r.stream && /\.flv$/.test(r.path) && fill(r.path, stream));
  if (flv) {
    out.flv = () => withCredential(fill(flv.path, stream), flv);
    out.ws = () => {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return `${scheme}//${location.host}${withCredential(fill(flv.path, stream), flv)}`;
    };
  }
  const hls = state.routes.find((r) => viewable(r) && r.stream
    && (/\.m3u8$/.test(r.path) || /\{\*[A-Za-z_0-9]*\}$/.test(r.path))
    && fill(r.path, stream, 'index.m3u8'));
  if (hls) out.hls = () => withCredential(fill(hls.path, stream, 'index.m3u8'), hls);
  return out;
}

function playButtons(stream) {
  const urls = playUrls(stream);
  const labels = { flv: 'FLV', ws: 'WS-FLV', hls: 'HLS' };
  return Object.keys(labels).filter((k) => urls[k]).map((kind) => el('button', {
    type: 'button',
    text: labels[kind],
    'data-play': kind,
    onclick: (ev) => {
      ev.stopPropagation();
      try { openPlayer(stream, kind, urls[kind]()); } catch (e) { $('player-error').textContent = e.message; }
    },
  }));
}

/** What a pasted URL or path is: by scheme and extension. */
function kindOf(url) {
  const u = new URL(url, location.href);
  if (u.protocol === 'ws:' || u.protocol === 'wss:') return 'ws';
  if (/\.flv$/i.test(u.pathname)) return 'flv';
  if (/\.m3u8$/i.test(u.pathname)) return 'hls';
  return 'file';
}

// ---- players ----

function missing(pkg) {
  return `${pkg} is not installed on the gateway: run \`npm ci --prefix web\` in the streamgate `
    + 'source tree (or set [ui] vendor_dir), then reload this page';
}

function openPlayer(name, kind, url) {
  $('player-error').textContent = '';
  if (state.tiles.length >= MAX_PLAYERS) state.tiles[0].close();
  const video = el('video', { muted: true, autoplay: true, playsInline: true, controls: true,
    'data-stream': name, 'data-kind': kind });
  const msg = el('div', { class: 'msg' });
  const time = el('span', { class: 'time', text: '0.0 s' });
  const tile = el('div', { class: 'tile' }, video,
    el('div', { class: 'bar' },
      el('span', { class: 'name', text: name }),
      el('span', { class: 'muted', text: kind.toUpperCase() }),
      time,
      el('button', { type: 'button', text: '×', title: 'close', onclick: () => handle.close() })),
    msg);
  $('players').append(tile);
  const fail = (text) => { msg.textContent = text; };
  let lib = null;
  const handle = {
    close() {
      try { lib && lib.destroy(); } catch (_) { /* already gone */ }
      video.removeAttribute('src');
      video.load();
      tile.remove();
      state.tiles = state.tiles.filter((t) => t !== handle);
    },
  };
  state.tiles.push(handle);
  video.addEventListener('timeupdate', () => { time.textContent = `${video.currentTime.toFixed(1)} s`; });
  video.addEventListener('error', () => fail(`video error: ${video.error && video.error.message}`));

  if (kind === 'flv' || kind === 'ws') {
    const m = window.mpegts;
    if (!m) return fail(missing('mpegts.js'));
    if (!m.getFeatureList().mseLivePlayback) return fail('this browser cannot play live FLV (no MSE)');
    lib = m.createPlayer({ type: 'flv', isLive: true, hasAudio: true, hasVideo: true,
      url: new URL(url, location.href).href },
    { enableWorker: false, lazyLoad: false, liveBufferLatencyChasing: true,
      autoCleanupSourceBuffer: true });
    lib.on(m.Events.ERROR, (type, detail, info) => {
      fail(`${type}: ${detail}${info && info.msg ? ` (${info.msg})` : ''}`);
    });
    lib.attachMediaElement(video);
    lib.load();
  } else if (kind === 'hls') {
    const H = window.Hls;
    if (H && H.isSupported()) {
      lib = new H({ enableWorker: true });
      lib.on(H.Events.ERROR, (_, d) => { if (d.fatal) fail(`HLS ${d.type}: ${d.details}`); });
      lib.loadSource(url);
      lib.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url; // Safari plays HLS natively
    } else {
      return fail(missing('hls.js'));
    }
  } else {
    video.src = url; // MP4 and friends: the browser does Range requests itself
  }
  const p = video.play();
  if (p && p.catch) p.catch(() => { /* autoplay refused: the controls are there */ });
  return handle;
}

// ---- wiring ----

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  login($('admin-token').value.trim());
});
$('logout').addEventListener('click', logout);
$('viewer-token').addEventListener('change', () => {
  sessionStorage.setItem(VIEWER_KEY, $('viewer-token').value.trim());
});
$('player-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const raw = $('play-url').value.trim() || $('play-url').placeholder;
  if (!raw) return;
  try {
    const kind = kindOf(raw);
    const u = new URL(raw, location.href);
    const v = $('viewer-token').value.trim();
    // A bare path gets the viewer token when it carries no credential of its own.
    // (The gateway never forwards it to a node, so it does no harm on open routes.)
    if (u.origin === location.origin && v && ![...u.searchParams.keys()].some(
      (k) => ['token', 'jwt', 'sign', 'md5'].includes(k))) {
      u.searchParams.set('token', v);
    }
    const name = decodeURIComponent(u.pathname.split('/').pop() || u.pathname);
    openPlayer(name, kind, u.href);
  } catch (e) {
    $('player-error').textContent = e.message;
  }
});

// Scripts are deferred: this runs after the player libraries loaded (or failed to).
if (state.token) login(state.token); else showLogin('');

// For tests and the curious: the open players.
window.streamgate = { state, openPlayer };
