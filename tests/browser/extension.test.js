// The Chrome extension (static/extension/) loaded unpacked into headless Chromium: its options
// page stores router URL, token, filter and the on/off switch; on an allowed site it injects
// p2pcamera.js into the page's main world before the page's own scripts run, so the page's plain
// getUserMedia() call returns the filtered track from a real camera-pod, and its toolbar popup
// shows the call's state and latency.
//
//   npm --prefix tests/browser run test:extension
//
// The test page and camera-pod sit behind one origin (a small proxy on 127.0.0.1), as a page and
// the router do in a cluster.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import {
  ServerProcess, eventsNamed, eventually, freePort, measureVideo, recordEvents, restrictIceToLoopback,
  returnedTrackInfo, staticDir, waitForEvent, writeCameraVideo,
} from './harness.js';

const extensionDir = path.join(staticDir, 'extension');
const chromiumBin = process.env.P2PCAMERA_CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'extension-test-token';

// A page that only knows the standard API: no p2pcamera script tag of its own.
const TEST_PAGE = `<!doctype html>
<html><head><title>a video call</title><script>
  window.__wrappedBeforePageScripts = typeof window.P2PCamera === 'object';
</script></head><body>
<video id="filtered" autoplay muted playsinline width="640" height="480"></video>
<button id="start">Join</button>
<script>
  document.getElementById('start').addEventListener('click', async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    document.getElementById('filtered').srcObject = stream;
  });
</script></body></html>`;

/** Serves the test page at / and forwards every other request to camera-pod. */
async function startSite(t, upstream) {
  const target = new URL(upstream);
  const server = http.createServer((request, response) => {
    if (request.url === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(TEST_PAGE);
      return;
    }
    const forward = http.request({
      host: target.hostname, port: target.port, path: request.url, method: request.method,
      headers: { ...request.headers, host: target.host },
    }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    });
    forward.on('error', () => {
      response.writeHead(502);
      response.end();
    });
    request.pipe(forward);
  });
  server.listen(await freePort(), '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise((resolve) => {
    server.close(resolve);
    server.closeAllConnections();
  }));
  return `http://127.0.0.1:${server.address().port}`;
}

async function launchWithExtension(t, cameraVideo) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-extension-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumBin,
    headless: true,
    ignoreDefaultArgs: ['--disable-extensions'],
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${cameraVideo}`,
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
      `--disable-extensions-except=${extensionDir}`, `--load-extension=${extensionDir}`,
    ],
  });
  t.after(async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  });
  let [worker] = context.serviceWorkers();
  worker ??= await context.waitForEvent('serviceworker', { timeout: 20000 });
  return { context, worker, extensionId: new URL(worker.url()).host };
}

/**
 * Opens the extension's toolbar popup for `page` (made the active tab) and returns a function
 * that reads the popup's text. Playwright does not attach to extension popups: the text is read
 * through the Chrome DevTools Protocol.
 */
async function openPopup(context, worker, page) {
  await page.bringToFront();
  await worker.evaluate(() => chrome.action.openPopup());
  const cdp = await context.newCDPSession(page);
  const popup = await eventually(
    async () => (await cdp.send('Target.getTargets')).targetInfos.find((t) => t.url.endsWith('/popup.html')) ?? null,
    (target) => target !== null,
    { what: 'the extension popup' },
  );
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId: popup.targetId, flatten: false });
  const replies = new Map();
  cdp.on('Target.receivedMessageFromTarget', (event) => {
    if (event.sessionId !== sessionId) return;
    const message = JSON.parse(event.message);
    replies.get(message.id)?.(message);
    replies.delete(message.id);
  });
  let lastId = 0;
  return async () => {
    lastId += 1;
    const reply = new Promise((resolve) => replies.set(lastId, resolve));
    const call = { id: lastId, method: 'Runtime.evaluate', params: { expression: 'document.body.innerText', returnByValue: true } };
    await cdp.send('Target.sendMessageToTarget', { sessionId, message: JSON.stringify(call) });
    return (await reply).result?.result?.value ?? null;
  };
}

async function saveOptions(context, extensionId, values) {
  const page = await context.newPage();
  await page.goto(`chrome-extension://${extensionId}/options.html`);
  await page.waitForFunction(() => document.getElementById('endpoint') !== null);
  await page.fill('#endpoint', values.endpoint);
  await page.fill('#session', values.session ?? '');
  await page.fill('#token', values.token ?? '');
  await page.fill('#filter', values.filter ?? '');
  await page.setChecked('#enabled', values.enabled);
  await page.click('#save');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Saved'), null, { timeout: 5000 });
  await page.close();
}

async function openCall(context, site) {
  const page = await context.newPage();
  await recordEvents(page);
  await page.goto(`${site}/`);
  return page;
}

describe('Chrome extension', () => {
  it('ships the same p2pcamera.js as static/ (Chrome loads no files from outside the extension)', () => {
    const shipped = fs.readFileSync(path.join(extensionDir, 'p2pcamera.js'), 'utf8');
    const source = fs.readFileSync(path.join(staticDir, 'p2pcamera.js'), 'utf8');
    assert.ok(shipped === source, 'static/extension/p2pcamera.js differs: cp static/p2pcamera.js static/extension/');
  });

  it('injects p2pcamera.js on an allowed site and the page gets the filtered camera, until switched off', async (t) => {
    const videoDir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-camera-'));
    t.after(() => fs.rmSync(videoDir, { recursive: true, force: true }));
    const cameraVideo = path.join(videoDir, 'camera.y4m');
    writeCameraVideo(cameraVideo);

    const pod = await ServerProcess.start('camera-pod', { extraArgs: ['--token', TOKEN] });
    t.after(() => pod.stop());
    const site = await startSite(t, pod.url);
    const { context, worker, extensionId } = await launchWithExtension(t, cameraVideo);
    await restrictIceToLoopback(context);

    // Options page refuses what cannot work.
    const options = await context.newPage();
    await options.goto(`chrome-extension://${extensionId}/options.html`);
    await options.fill('#endpoint', 'http://camera.example.com');
    await options.click('#save');
    await options.waitForFunction(() => document.getElementById('status').className === 'error');
    assert.match(await options.textContent('#status'), /https/);
    await options.close();

    await saveOptions(context, extensionId, { endpoint: site, token: TOKEN, filter: 'selfie-replace:#00ff00', enabled: true });

    const page = await openCall(context, site);
    assert.equal(await page.evaluate(() => window.__wrappedBeforePageScripts), true,
      'p2pcamera.js was not in the page before its own scripts ran');
    await page.click('#start');
    await waitForEvent(page, 'connected', 30000);
    const returned = await returnedTrackInfo(page);
    assert.equal(returned.filtered, true, 'the page did not get the filtered track');
    assert.equal(returned.isReceiverTrack, true, 'the page got a track that is not the remote one');
    const green = await eventually(
      () => measureVideo(page, '#filtered'),
      (m) => m.greenFraction > 0.4,
      { what: 'green background from camera-pod in the page', timeout: 30000 },
    );
    assert.ok(green.width > 0);

    // The toolbar popup shows the call's state and the round trip p2pcamera.js measures.
    await page.waitForFunction(() => window.__p2pcameraEvents.some((e) => e.name === 'latency' && e.detail.round_trip_ms !== null),
      null, { timeout: 10000 });
    const readPopup = await openPopup(context, worker, page);
    const popupText = await eventually(readPopup, (text) => /Round trip\s+\d+ ms/.test(text ?? ''),
      { what: 'the round trip in the popup', timeout: 10000 });
    assert.match(popupText, /Filtering your camera/);
    assert.match(popupText, /Pod\s+[\d.]+ ms/);
    const popupMs = Number(popupText.match(/Round trip\s+(\d+) ms/)[1]);
    const pageMs = (await eventsNamed(page, 'latency')).map((e) => e.detail.round_trip_ms).filter((ms) => ms !== null);
    assert.ok(pageMs.some((ms) => Math.abs(ms - popupMs) <= 1), `the popup shows ${popupMs} ms, the page measured ${pageMs}`);
    assert.ok(popupMs > 0 && popupMs < 1000, `implausible round trip ${popupMs} ms`);
    // Any script of the page can send the status event: only a known state and numbers reach the
    // popup, shown as text.
    await page.evaluate(() => {
      const forge = (status) => document.dispatchEvent(
        new CustomEvent('p2pcamera-extension:status', { detail: JSON.stringify(status) }));
      forge({ state: '<b>owned</b>', round_trip_ms: 1 });
      forge({ state: 'connected', round_trip_ms: '<img src=x>', pod_ms: 'owned' });
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const forged = await readPopup();
    assert.ok(!/owned|<img/.test(forged ?? ''), `the popup shows what the page forged: ${forged}`);
    await page.close();

    // Switched off: the same page gets its own camera and never contacts the server.
    await saveOptions(context, extensionId, { endpoint: site, token: TOKEN, filter: '', enabled: false });
    const off = await openCall(context, site);
    await off.click('#start');
    await eventually(() => measureVideo(off, '#filtered'), (m) => m.width > 0, { what: 'camera picture with the filter off' });
    const raw = await returnedTrackInfo(off);
    assert.equal(raw.filtered, false, 'the filter ran although it is switched off');
    assert.equal((await eventsNamed(off, 'connecting')).length, 0, 'an offer was sent although the filter is off');
    const measured = await measureVideo(off, '#filtered');
    assert.ok(measured.greenFraction < 0.05, `raw camera is green (${measured.greenFraction})`);
    await off.close();
  });
});
