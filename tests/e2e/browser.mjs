// Headless Chromium with p2pcamera.js loaded from the router, for the Rust end-to-end tests.
//
//   node tests/e2e/browser.mjs --router https://127.0.0.1:R --session ns/name --token T \
//        --page-origin http://127.0.0.1:P [--artifact name] [--ice-servers JSON] \
//        [--trickle true|false] [--turn-delay-ms MS] [--passthrough]
//
// A page at --page-origin (served by this script) loads <router>/p2pcamera.js with data-endpoint/data-session/data-token and calls
// getUserMedia; `--session ""` talks to a camera-pod directly, and `--ice-servers` (a router's
// `/ice-servers` answer) goes to P2PCamera.configure({iceServers}) first, as does `--trickle`.
// `--turn-delay-ms` puts each TURN server reached over TCP (`?transport=tcp`, `turns:`) behind a
// proxy of this script that holds every chunk that long in each direction: a relay that far away.
// `--passthrough`: the pod runs passthrough, so the camera's picture, not green, shows it connected.
// Reports one JSON object per line on stdout:
//   {"event":"connected", connect_ms, first_frame_ms, green, filtered, receiver, path,
//    offer_candidates, trickled}                                   the filtered track is shown
//        (path: P2PCamera.path; first_frame_ms: p2pcamera:connecting to p2pcamera:connected, i.e.
//        from the peer connection's start, offer and all, to the first frame back; offer_candidates:
//        the candidate types in the offer the page posted; trickled: per POST .../candidates, the
//        candidate types it carried and the HTTP status of its answer)
//   {"event":"armed"}                                              after stdin says `loss`
//   {"event":"reconnected", raw_between, reconnect_ms, green}      after that loss
//   {"event":"error", message}
// Commands on stdin: `loss` (the camera pod is about to be killed or deleted: answer `armed`, then
// wait for the raw camera and for the filtered video of a new connection), `connect {options}`
// (P2PCamera.configure(options), then getUserMedia again in the same page: a new connection that
// replaces the last one; answers `connected` as above), `close`. `loss` and `connect` may come any
// number of times.

import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  DelayingTcpProxy, QUADRANTS, colourDistance, eventually, measureVideo, recordEvents, restrictIceToLoopback,
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
    trickle: { type: 'string' },
    'turn-delay-ms': { type: 'string' },
    passthrough: { type: 'boolean', default: false },
  },
});

/** TURN servers reached over TCP (`turn:...?transport=tcp` or `turns:`), which a proxy can delay. */
const TCP_TURN_URL = /^(turns?):([^:?]+):(\d+)(.*)$/;

/**
 * The ICE servers of --ice-servers, with those reached over TCP behind a proxy that delays them
 * by --turn-delay-ms each way (the proxies started go in `proxies`).
 */
async function iceServers(proxies) {
  const servers = opts['ice-servers'] ? JSON.parse(opts['ice-servers']).iceServers : null;
  const delayMs = Number(opts['turn-delay-ms'] ?? 0);
  if (!servers || delayMs <= 0) return servers;
  const delay = async (url) => {
    const match = TCP_TURN_URL.exec(url);
    if (!match || (match[1] === 'turn' && !match[4].includes('transport=tcp'))) return url;
    const proxy = await DelayingTcpProxy.start(delayMs, { host: match[2], port: Number(match[3]) });
    proxies.push(proxy);
    return `${match[1]}:127.0.0.1:${proxy.port}${match[4]}`;
  };
  return Promise.all(servers.map(async (server) => ({
    ...server,
    urls: Array.isArray(server.urls) ? await Promise.all(server.urls.map(delay)) : await delay(server.urls),
  })));
}

function emit(fields) {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

function pageHtml(servers) {
  const attr = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;');
  const options = {
    ...(servers ? { iceServers: servers } : {}),
    ...(opts.trickle ? { trickle: opts.trickle === 'true' } : {}),
  };
  return `<!doctype html><meta charset="utf-8"><title>p2pcamera e2e</title>
<video id="raw" autoplay muted playsinline></video>
<video id="filtered" autoplay muted playsinline></video>
<script src="${attr(opts.router)}/p2pcamera.js" data-endpoint="${attr(opts.router)}"
  data-session="${attr(opts.session)}" data-token="${attr(opts.token)}"></script>
<script>
  P2PCamera.configure(${JSON.stringify(options)});
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

/** The filtered picture once it shows what the pod's filter makes of the camera. */
async function connectedPicture(page) {
  if (!opts.passthrough) return connectedGreen(page);
  return eventually(() => measureVideo(page, '#filtered'), showsCameraPicture,
    { what: "the camera's picture back from a passthrough pod", timeout: 30000 });
}

/** The type (host, srflx, prflx, relay) of an ICE candidate attribute. */
function candidateType(candidate) {
  return candidate.split(' ')[7] ?? null;
}

/**
 * What the page posted of ICE since the last `reset()`: the candidate types of each offer and, per
 * trickle request, the candidate types it carried and the status of its answer.
 */
function recordIce(page) {
  const record = { offers: [], trickled: [], answers: [] };
  page.on('request', (request) => {
    if (request.method() !== 'POST') return;
    const leaf = new URL(request.url()).pathname.split('/').at(-1);
    if (leaf === 'offer') {
      record.offers.push(request.postDataJSON().sdp.split(/\r?\n/).filter((line) => line.startsWith('a=candidate:')).map(candidateType));
    } else if (leaf === 'candidates') {
      const entry = { candidates: request.postDataJSON().candidates.map(({ candidate }) => candidateType(candidate)), status: null };
      record.trickled.push(entry);
      record.answers.push(request.response().then((response) => { entry.status = response?.status() ?? null; }, () => {}));
    }
  });
  return {
    reset() {
      record.offers.length = 0;
      record.trickled.length = 0;
      record.answers.length = 0;
    },
    /** The last offer's candidate types and the trickle requests, their answers awaited. */
    async report() {
      await Promise.race([Promise.all(record.answers), new Promise((resolve) => { setTimeout(resolve, 5000); })]);
      return { offer_candidates: record.offers.at(-1) ?? null, trickled: record.trickled.map((entry) => ({ ...entry })) };
    },
  };
}

/** Milliseconds from the last p2pcamera:connecting to the next p2pcamera:connected (page clock). */
async function firstFrameMs(page) {
  return page.evaluate(() => {
    const events = window.__p2pcameraEvents;
    const connecting = events.findLast((e) => e.name === 'connecting');
    const connected = connecting && events.find((e) => e.name === 'connected' && e.at >= connecting.at);
    return connected ? Math.round((connected.at - connecting.at) * 10) / 10 : null;
  });
}

/** The `connected` report of the connection just made, `started` (ms) being when it was asked for. */
async function connectedReport(page, ice, started) {
  const first = await connectedPicture(page);
  const info = await returnedTrackInfo(page);
  const connectionPath = await eventually(() => page.evaluate(() => P2PCamera.path), (p) => p !== null,
    { what: 'the selected candidate pair (P2PCamera.path)', timeout: 10000 });
  return {
    event: 'connected', connect_ms: Date.now() - started, first_frame_ms: await firstFrameMs(page),
    green: first.greenFraction, filtered: info.filtered, receiver: info.isReceiverTrack, camera_track: info.isCameraTrack,
    path: connectionPath, ...await ice.report(),
  };
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
    // The test's `turns:` server has a certificate from a test CA Chromium does not know; the
    // whole network service, TURN over TLS included, accepts it (ignoreHTTPSErrors covers pages
    // only).
    '--ignore-certificate-errors',
  ],
});
let page = null;
let pageServer = null;
const consoleLines = [];
const proxies = [];
try {
  const servers = await iceServers(proxies);
  await restrictIceToLoopback(context);
  // A real server for the page, so that Chromium places it in the loopback address space (a
  // page fulfilled by interception counts as public and may not call loopback addresses).
  const origin = new URL(opts['page-origin']);
  pageServer = http.createServer((request, response) => {
    response.writeHead(request.url === '/' ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
    response.end(request.url === '/' ? pageHtml(servers) : 'not found');
  });
  pageServer.listen(Number(origin.port), origin.hostname);
  await once(pageServer, 'listening');
  page = await context.newPage();
  await recordEvents(page);
  const ice = recordIce(page);
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error}`));
  const started = Date.now();
  await page.goto(`${opts['page-origin']}/`);
  await waitForEvent(page, 'connected', CONNECT_TIMEOUT_MS);
  emit(await connectedReport(page, ice, started));
  await page.screenshot({ path: saveArtifact(`${opts.artifact}-connected.png`) });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = line.trim();
    if (command === 'close' || command === '') break;
    if (command.startsWith('connect ')) {
      ice.reset();
      const asked = Date.now();
      await page.evaluate(async (options) => {
        window.__p2pcameraEvents.length = 0;
        P2PCamera.configure(options);
        const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
        document.getElementById('filtered').srcObject = stream;
        document.getElementById('raw').srcObject = P2PCamera.cameraStream ?? stream;
      }, JSON.parse(command.slice('connect '.length)));
      await waitForEvent(page, 'connected', CONNECT_TIMEOUT_MS);
      emit(await connectedReport(page, ice, asked));
    }
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
  for (const proxy of proxies) proxy.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
