// Many live streams at once on one dashboard page: logs in, opens one player per stream name
// given, and waits until every video's currentTime has advanced 3 s or more. Over HTTP/1.1 a
// browser opens at most six connections per host, so eight HTTP-FLV players need WebSocket-FLV
// (`ws`) or HTTP/2 (`flv` on an https:// gateway).
//
// usage: node many.mjs DASHBOARD_URL ADMIN_TOKEN KIND STREAM...
// Prints one JSON line: { advanced: { stream: seconds } }.
import { launch, fail } from './browser.mjs';

const [url, token, kind, ...streams] = process.argv.slice(2);
if (!url || !token || !kind || streams.length === 0) fail('usage: many.mjs URL TOKEN KIND STREAM...');
const ADVANCE = 3;

const browser = await launch();
let advanced;
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, ignoreHTTPSErrors: true });
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  await page.goto(url);
  await page.fill('#admin-token', token);
  await page.click('#login-form button[type=submit]');
  for (const s of streams) {
    await page.waitForSelector(`#streams tr[data-stream="${s}"] button[data-play="${kind}"]`, { timeout: 10_000 });
    await page.click(`#streams tr[data-stream="${s}"] button[data-play="${kind}"]`);
  }
  advanced = await page.waitForFunction(({ need, n }) => {
    const vs = [...document.querySelectorAll('#players video')];
    if (vs.length !== n) return false;
    const out = {};
    for (const v of vs) {
      if (v.dataset.t0 === undefined && v.readyState >= 2) v.dataset.t0 = String(v.currentTime);
      if (v.dataset.t0 === undefined) return false;
      out[v.dataset.stream] = v.currentTime - Number(v.dataset.t0);
    }
    return Object.values(out).every((d) => d >= need) && out;
  }, { need: ADVANCE, n: streams.length }, { timeout: 45_000, polling: 250 })
    .then((h) => h.jsonValue())
    .catch(async () => {
      const seen = await page.$$eval('#players .tile', (ts) => ts.map((t) => {
        const v = t.querySelector('video');
        return `${v.dataset.stream}: t=${v.currentTime} ready=${v.readyState} msg=${t.querySelector('.msg').textContent}`;
      }));
      fail(`not every video advanced ${ADVANCE} s:\n${seen.join('\n')}\nconsole:\n${logs.join('\n')}`);
    });
} finally {
  await browser.close();
}
console.log(JSON.stringify({ advanced }));
