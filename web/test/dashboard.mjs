// The dashboard as an operator uses it, in headless Chromium: a wrong admin token is refused,
// the right one shows both demo streams; cam1 plays over HTTP-FLV (mpegts.js) and over HLS
// (hls.js), cam2 over WebSocket-FLV when `--ws` is given, and with `--file=PATH` that file
// (MP4) through the URL field with the bare video element; each video's currentTime must advance
// by 3 s or more, and the streams table must show the live viewers and their bitrate.
// A screenshot of the dashboard goes to OUT_DIR/dashboard.png.
//
// usage: node dashboard.mjs DASHBOARD_URL ADMIN_TOKEN OUT_DIR [--ws] [--file=PATH]
// Prints one JSON line: { streams, advanced: { kind: seconds }, viewers, bitrate, screenshot }.
import { launch, fail } from './browser.mjs';
import path from 'node:path';
import fs from 'node:fs';

const [url, token, outDir, ...flags] = process.argv.slice(2);
if (!url || !token || !outDir) fail('usage: dashboard.mjs URL ADMIN_TOKEN OUT_DIR [--ws]');
const ws = flags.includes('--ws');
const file = (flags.find((f) => f.startsWith('--file=')) || '').slice('--file='.length);
const ADVANCE = 3; // seconds of media each player must play
const LIMIT_MS = 40_000;

const browser = await launch();
const result = {};
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  const check = (cond, msg) => { if (!cond) fail(`${msg}\nconsole:\n${logs.join('\n')}`); };

  await page.goto(url);
  // A wrong token is refused with a message, and the dashboard stays hidden.
  await page.fill('#admin-token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('login-error').textContent.length > 0,
    null, { timeout: 10_000 });
  const err = await page.textContent('#login-error');
  check(/refused/.test(err), `wrong token: expected a refusal, saw ${JSON.stringify(err)}`);
  check(await page.isHidden('#dash'), 'the dashboard showed with a wrong token');

  await page.fill('#admin-token', token);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#streams tr[data-stream="cam1"]', { timeout: 10_000 });
  await page.waitForSelector('#streams tr[data-stream="cam2"]', { timeout: 10_000 });
  result.streams = await page.$$eval('#streams tbody tr', (rows) => rows.map((r) => r.dataset.stream));
  result.nodes = await page.$$eval('#nodes tbody tr', (rows) => rows.map((r) => r.dataset.node));

  const plays = [['cam1', 'flv'], ['cam1', 'hls']];
  if (ws) plays.push(['cam2', 'ws']);
  for (const [stream, kind] of plays) {
    await page.click(`#streams tr[data-stream="${stream}"] button[data-play="${kind}"]`);
  }
  if (file) {
    await page.fill('#play-url', file);
    await page.click('#player-form button[type=submit]');
    plays.push([file, 'file']);
  }
  // Every video must play ADVANCE seconds past the first time it showed (a live stream may
  // start anywhere on its timeline).
  const advanced = await page.waitForFunction(({ kinds, need }) => {
    const out = {};
    for (const k of kinds) {
      const v = document.querySelector(`#players video[data-kind="${k}"]`);
      if (!v) return false;
      if (v.dataset.t0 === undefined && v.readyState >= 2) v.dataset.t0 = String(v.currentTime);
      if (v.dataset.t0 === undefined) return false;
      out[k] = v.currentTime - Number(v.dataset.t0);
    }
    return Object.values(out).every((d) => d >= need) && out;
  }, { kinds: plays.map((p) => p[1]), need: ADVANCE }, { timeout: LIMIT_MS, polling: 250 })
    .then((h) => h.jsonValue())
    .catch(async () => {
      const seen = await page.$$eval('#players .tile', (ts) => ts.map((t) => {
        const v = t.querySelector('video');
        return `${v.dataset.kind}: t=${v.currentTime} ready=${v.readyState} t0=${v.dataset.t0} msg=${t.querySelector('.msg').textContent}`;
      }));
      fail(`videos did not advance ${ADVANCE} s:\n${seen.join('\n')}\nconsole:\n${logs.join('\n')}`);
    });
  result.advanced = advanced;

  // The streams table updates by itself: cam1's live viewer and its bitrate show up.
  await page.waitForFunction(() => {
    const row = document.querySelector('#streams tr[data-stream="cam1"]');
    return row && Number(row.querySelector('.viewers').textContent) >= 1
      && /bit\/s/.test(row.querySelector('.bitrate').textContent);
  }, null, { timeout: 10_000 }).catch(() => fail('cam1 never showed a viewer and a bitrate'));
  result.viewers = Number(await page.textContent('#streams tr[data-stream="cam1"] .viewers'));
  result.bitrate = await page.textContent('#streams tr[data-stream="cam1"] .bitrate');

  // A stream's viewers: click its row.
  await page.click('#streams tr[data-stream="cam1"] td');
  await page.waitForSelector('#viewers tbody tr', { timeout: 10_000 })
    .catch(() => fail('the viewer list of cam1 stayed empty'));
  result.viewer_rows = await page.$$eval('#viewers tbody tr', (r) => r.length);

  fs.mkdirSync(outDir, { recursive: true });
  result.screenshot = path.join(outDir, 'dashboard.png');
  await page.screenshot({ path: result.screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
