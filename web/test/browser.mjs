// Launches Debian's headless Chromium through playwright-core with the flags this closed
// network needs (no background networking, no component updates), for the browser tests.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      // The servers under test are on loopback and the test pages (about:blank) are not a
      // secure context: Chromium's Local Network Access checks would block every request.
      '--disable-features=LocalNetworkAccessChecks',
    ],
  });
}

/** Fails the script with a message on stderr and exit code 1. */
export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}
