// hls.js in headless Chromium plays a live HLS stream through the gateway with a play token that
// expires while it plays: the gateway's HLS session must keep it going.
//
//   node web/test/hls_session.mjs URL EXPIRED_AT_MS PLAY_SECONDS MIN_PLAYED
//
// URL is the playlist with the play token; EXPIRED_AT_MS the wall time (ms since the epoch) from
// which the token is refused; the player plays PLAY_SECONDS of wall time after it starts, and
// must advance MIN_PLAYED seconds of media. Prints one JSON line: played (media seconds over
// those PLAY_SECONDS), fatal (hls.js fatal errors), errors (all hls.js errors), ok_after_expiry
// (200 answers to requests made after the token expired), refused (4xx answers), requests.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, fail } from './browser.mjs';

const [url, expiredAtArg, playArg, minArg] = process.argv.slice(2);
if (!url || !expiredAtArg || !playArg || !minArg) {
  fail('usage: hls_session.mjs URL EXPIRED_AT_MS PLAY_SECONDS MIN_PLAYED');
}
const expiredAt = Number(expiredAtArg);
const playMs = Number(playArg) * 1000;
const minPlayed = Number(minArg);
const here = path.dirname(fileURLToPath(import.meta.url));
const hlsJs = path.join(here, '..', 'node_modules', 'hls.js', 'dist', 'hls.min.js');

const t0 = Date.now();
const browser = await launch();
const launchedAt = Date.now();
let result;
try {
  const page = await browser.newPage();
  // Every answer the page got, with when its request started.
  const answers = [];
  const started = new Map();
  page.on('request', (r) => started.set(r, Date.now()));
  page.on('response', (r) => {
    answers.push({ url: r.url(), status: r.status(), at: started.get(r.request()) ?? Date.now() });
  });
  await page.goto('about:blank');
  await page.addScriptTag({ path: hlsJs });
  const seen = await page.evaluate(async ({ url, playMs }) => {
    if (!Hls.isSupported()) return { unsupported: true };
    const video = document.createElement('video');
    video.muted = true;
    document.body.appendChild(video);
    const hls = new Hls(); // liveSyncDurationCount and the rest at their defaults
    const errors = [];
    hls.on(Hls.Events.ERROR, (_, d) => {
      errors.push({ type: d.type, details: d.details, fatal: d.fatal, code: d.response?.code ?? null });
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    hls.loadSource(url);
    hls.attachMedia(video);
    const marks = { load: Date.now() };
    hls.on(Hls.Events.MANIFEST_LOADED, () => { marks.manifest = Date.now(); });
    hls.on(Hls.Events.FRAG_BUFFERED, () => { marks.buffered ??= Date.now(); });
    const playing = await new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), 20000);
      video.addEventListener('playing', () => { clearTimeout(t); resolve(true); }, { once: true });
    });
    if (!playing) return { playing, errors, currentTime: video.currentTime };
    const from = video.currentTime;
    const startedAt = Date.now();
    await new Promise((r) => setTimeout(r, playMs));
    const to = video.currentTime;
    hls.destroy();
    return { playing, from, to, startedAt, errors, marks };
  }, { url, playMs });

  if (seen.unsupported) fail('hls.js: MediaSource is not supported in this Chromium');
  const after = answers.filter((a) => a.at >= expiredAt);
  result = {
    playing: seen.playing,
    played: seen.playing ? Number((seen.to - seen.from).toFixed(2)) : 0,
    started_after_expiry_ms: seen.startedAt ? seen.startedAt - expiredAt : null,
    // When things happened, in ms after the script started.
    timeline: {
      launched: launchedAt - t0,
      ...Object.fromEntries(Object.entries(seen.marks ?? {}).map(([k, v]) => [k, v - t0])),
      playing: seen.startedAt ? seen.startedAt - t0 : null,
      expired: expiredAt - t0,
    },
    fatal: seen.errors.filter((e) => e.fatal),
    errors: seen.errors,
    requests: answers.length,
    ok_after_expiry: after.filter((a) => a.status === 200).length,
    refused: answers.filter((a) => a.status >= 400 && a.status < 500).length,
    redirects: answers.filter((a) => a.status >= 300 && a.status < 400).length,
  };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
if (!result.playing) fail('the video never started playing');
if (result.fatal.length) fail(`fatal hls.js errors: ${JSON.stringify(result.fatal)}`);
if (result.played < minPlayed) fail(`played ${result.played} s, wanted at least ${minPlayed} s`);
if (result.ok_after_expiry === 0) fail('no request succeeded after the token expired');
if (result.refused) fail(`${result.refused} requests were refused`);
