// Headless Chromium with p2pcamera.js loaded from the router, for the Rust end-to-end tests.
//
//   node tests/e2e/browser.mjs --router https://127.0.0.1:R --session ns/name --token T \
//        --page-origin http://127.0.0.1:P [--artifact name] [--ice-servers JSON]
//
// A page at --page-origin (served by this script) loads <router>/p2pcamera.js with data-endpoint/data-session/data-token and calls
// getUserMedia; `--session ""` talks to a camera-pod directly, and `--ice-servers` (a router's
// `/ice-servers` answer) goes to P2PCamera.configure({iceServers}) first. Reports one JSON object
// per line on stdout:
//   {"event":"connected", connect_ms, green, filtered, receiver, path}   the filtered track is shown
//                                                                  (path: P2PCamera.path)
//   {"event":"armed"}                                              after stdin says `loss`
//   {"event":"reconnected", raw_between, reconnect_ms, green}      after that loss
//   {"event":"error", message}
// Commands on stdin: `loss` (the camera pod is about to be killed or deleted: answer `armed`, then
// wait for the raw camera and for the filtered video of a new connection), `close`. `loss` may
// come any number of times.

import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  QUADRANTS, colourDistance, eventually, measureVideo, recordEvents, restrictIceToLoopback,
  returnedTrackInfo, saveArtifact, waitForEvent, writeCameraVideo,
} from '../browser/harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const { chromium } = await import(path.join(here, '..', 'browser', 'node_modules', 'playwright-core', 'index.mjs'));

const CONNECT_TIMEOUT_MS = 45000;
const RECONNECT_TIMEOUT_MS = 90000;
const GREEN = 0.5;

const { values: opts } = parseArgs({
  options: {
    router: { type: 'string' },
    session: { type: 'string' },
    token: { type: 'string' },
    'page-origin': { type: 'string' },
    artifact: { type: 'string', default: 'e2e-browser' },
    'ice-servers': { type: 'string' },
  },
});

function emit(fields) {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

function pageHtml() {
  const attr = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;');
  return `<!doctype html><meta charset="utf-8"><title>p2pcamera e2e</title>
<video id="raw" autoplay muted playsinline></video>
<video id="filtered" autoplay muted playsinline></video>
<script src="${attr(opts.router)}/p2pcamera.js" data-endpoint="${attr(opts.router)}"
  data-session="${attr(opts.session)}" data-token="${attr(opts.token)}"></script>
<script>
  ${opts['ice-servers'] ? `P2PCamera.configure({ iceServers: ${JSON.stringify(JSON.parse(opts['ice-servers']).iceServers)} });` : ''}
  window.started = (async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    document.getElementById('filtered').srcObject = stream;
    document.getElementById('raw').srcObject = P2PCamera.cameraStream ?? stream;
  })();
</script>`;
}

function showsCameraPicture(m) {
  return Object.entries(QUADRANTS).every(([name, colour]) => colourDistance(m.quadrants[name], colour) < 40);
}

async function connectedGreen(page) {
  return eventually(() => measureVideo(page, '#filtered'), (m) => m.greenFraction > GREEN,
    { what: 'green (selfie-replace) picture from the router', timeout: 30000 });
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-e2e-'));
const video = path.join(dir, 'camera.y4m');
writeCameraVideo(video);
const context = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
  executablePath: process.env.P2PCAMERA_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-video-capture=${video}`,
    '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  ],
});
let page = null;
let pageServer = null;
const consoleLines = [];
try {
  await restrictIceToLoopback(context);
  // A real server for the page, so that Chromium places it in the loopback address space (a
  // page fulfilled by interception counts as public and may not call loopback addresses).
  const origin = new URL(opts['page-origin']);
  pageServer = http.createServer((request, response) => {
    response.writeHead(request.url === '/' ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
    response.end(request.url === '/' ? pageHtml() : 'not found');
  });
  pageServer.listen(Number(origin.port), origin.hostname);
  await once(pageServer, 'listening');
  page = await context.newPage();
  await recordEvents(page);
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error}`));
  const started = Date.now();
  await page.goto(`${opts['page-origin']}/`);
  await waitForEvent(page, 'connected', CONNECT_TIMEOUT_MS);
  const first = await connectedGreen(page);
  const info = await returnedTrackInfo(page);
  const connectionPath = await eventually(() => page.evaluate(() => P2PCamera.path), (p) => p !== null,
    { what: 'the selected candidate pair (P2PCamera.path)', timeout: 10000 });
  emit({
    event: 'connected', connect_ms: Date.now() - started, green: first.greenFraction,
    filtered: info.filtered, receiver: info.isReceiverTrack, camera_track: info.isCameraTrack,
    path: connectionPath,
  });
  await page.screenshot({ path: saveArtifact(`${opts.artifact}-connected.png`) });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = line.trim();
    if (command === 'close' || command === '') break;
    if (command === 'loss') {
      const count = (name) => page.evaluate((n) => window.__p2pcameraEvents.filter((e) => e.name === n).length, name);
      const [connections, reconnects] = [await count('connected'), await count('reconnecting')];
      emit({ event: 'armed' });
      const lostAt = Date.now();
      await page.waitForFunction((n) => window.__p2pcameraEvents.filter((e) => e.name === 'reconnecting').length > n,
        reconnects, { timeout: RECONNECT_TIMEOUT_MS });
      const between = await returnedTrackInfo(page);
      const raw = await eventually(() => measureVideo(page, '#filtered'), (m) => showsCameraPicture(m) && m.greenFraction < 0.05,
        { what: 'raw camera shown while reconnecting', timeout: 20000 });
      await page.screenshot({ path: saveArtifact(`${opts.artifact}-reconnecting.png`) });
      await page.waitForFunction((n) => window.__p2pcameraEvents.filter((e) => e.name === 'connected').length > n,
        connections, { timeout: RECONNECT_TIMEOUT_MS });
      const back = await connectedGreen(page);
      const after = await returnedTrackInfo(page);
      emit({
        event: 'reconnected', reconnect_ms: Date.now() - lostAt, green: back.greenFraction,
        raw_between: { state: between.state, filtered: between.filtered, track: between.trackState, green: raw.greenFraction },
        filtered: after.filtered, receiver: after.isReceiverTrack,
      });
    }
  }
} catch (error) {
  const events = page ? await page.evaluate(() => window.__p2pcameraEvents).catch(() => null) : null;
  emit({ event: 'error', message: String(error?.stack ?? error), events, console: consoleLines.slice(-20) });
  if (page) await page.screenshot({ path: saveArtifact(`${opts.artifact}-error.png`) }).catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  pageServer?.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
