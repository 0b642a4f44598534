// The dashboard on a gateway whose player libraries are not installed: it still loads, logs in
// and lists the streams, and the FLV player says how to install the libraries instead of
// playing. (HLS is not checked: without hls.js the page hands the playlist to the browser, and
// recent Chromium plays HLS natively, as Safari does.)
//
// usage: node no_vendor.mjs DASHBOARD_URL ADMIN_TOKEN STREAM
// Prints one JSON line: { flv } (the player's message).
import { launch, fail } from './browser.mjs';

const [url, token, stream] = process.argv.slice(2);
if (!url || !token || !stream) fail('usage: no_vendor.mjs URL TOKEN STREAM');

const browser = await launch();
const out = {};
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.fill('#admin-token', token);
  await page.click('#login-form button[type=submit]');
  const row = `#streams tr[data-stream="${stream}"]`;
  await page.waitForSelector(row, { timeout: 10_000 }).catch(() => fail(`${stream} not listed`));
  for (const kind of ['flv']) {
    const btn = `${row} button[data-play="${kind}"]`;
    if (!(await page.$(btn))) continue;
    await page.click(btn);
    const msg = `#players video[data-kind="${kind}"] ~ .msg`;
    await page.waitForFunction((sel) => document.querySelector(sel)?.textContent.length > 0, msg,
      { timeout: 10_000 }).catch(() => fail(`the ${kind} player said nothing`));
    out[kind] = await page.textContent(msg);
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
