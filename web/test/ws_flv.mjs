// WebSocket-FLV in a real browser: mpegts.js, injected into a blank page, plays a `ws://` live
// URL into a muted <video>; prints how far playback advanced.
//
// usage: node web/test/ws_flv.mjs ws://127.0.0.1:PORT/flv/cam1.flv?token=... [seconds]
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import http from 'node:http';
import { launch, fail } from './browser.mjs';

const url = process.argv[2];
const seconds = Number(process.argv[3] || 6);
if (!url || !url.startsWith('ws')) fail('usage: ws_flv.mjs WS_URL [seconds]');

const here = path.dirname(fileURLToPath(import.meta.url));
const mpegts = path.join(here, '..', 'node_modules', 'mpegts.js', 'dist', 'mpegts.js');

// The page comes from a loopback http server of this script's own: Chromium's local network
// access checks refuse a ws:// to 127.0.0.1 from about:blank or a page of unknown address.
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><video id="v" muted autoplay playsinline></video>');
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

const browser = await launch();
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(pageUrl);
  await page.addScriptTag({ path: mpegts });
  const setup = await page.evaluate((src) => {
    if (!window.mpegts) return 'mpegts.js did not load';
    if (!mpegts.getFeatureList().mseLivePlayback) return 'no MSE live playback in this browser';
    const video = document.getElementById('v');
    const player = mpegts.createPlayer(
      { type: 'flv', isLive: true, url: src },
      { enableWorker: false, liveBufferLatencyChasing: false },
    );
    window.__errors = [];
    player.on(mpegts.Events.ERROR, (type, detail, info) => {
      window.__errors.push(`${type} ${detail} ${JSON.stringify(info)}`);
    });
    player.attachMediaElement(video);
    player.load();
    video.play().catch((e) => window.__errors.push(`play: ${e}`));
    window.__player = player;
    return null;
  }, url);
  if (setup) fail(setup);

  // Wait for playback to start, then measure over `seconds` of wall time.
  const started = Date.now();
  let t0 = 0;
  while (Date.now() - started < 30000) {
    t0 = await page.evaluate(() => document.getElementById('v').currentTime);
    if (t0 > 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!(t0 > 0)) {
    const errors = await page.evaluate(() => window.__errors);
    fail(`playback never started; errors ${JSON.stringify(errors)}; console ${JSON.stringify(logs.slice(-20))}`);
  }
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const result = await page.evaluate(() => {
    const v = document.getElementById('v');
    return {
      currentTime: v.currentTime,
      videoWidth: v.videoWidth,
      readyState: v.readyState,
      errors: window.__errors,
    };
  });
  await page.evaluate(() => window.__player.destroy());
  console.log(JSON.stringify({ ...result, start: t0, advanced: result.currentTime - t0 }));
} finally {
  await browser.close();
  server.close();
}
