// The latency users see: p2pcamera.js's own round trip per frame (`P2PCamera.latency`,
// `p2pcamera:latency`) against the hidden-index method of the benchmarks. The fake camera plays a
// clip whose pictures carry their frame index; the page reads the index off every frame its raw
// camera view shows (with the frame's capture time) and off every filtered frame its filtered
// view shows (with the time it is expected on screen), so it knows each frame's true round trip.
// The media goes through a relay on 127.0.0.1 that holds every datagram RELAY_DELAY_MS in each
// direction: the true round trip is at least twice that, far above camera-pod's own part.
//
//   npm --prefix tests/browser run test:latency

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  DelayingRelay, FRAME_INDEX_STRIP, ServerProcess, countFrames, eventsNamed, eventually, launchBrowser,
  recordEvents, restrictIceToLoopback, returnedTrackInfo, routeOffersThrough, waitForEvent,
  writeIndexedCameraVideo,
} from './harness.js';

const FRAME_INTERVAL_MS = 1000 / 30;
/** The clip's length: an index comes back long before the camera shows it again. */
const CLIP_FRAMES = 60;
const RELAY_DELAY_MS = 50;
/** How long both measurements run side by side. */
const MEASURE_MS = 6000;

function indexedCameraVideo(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-indexed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'indexed.y4m');
  writeIndexedCameraVideo(file, CLIP_FRAMES);
  return file;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * From now on, the page notes the frame index of every frame its views show: `captured` from
 * #raw (the camera, at the frame's capture time) and `shown` from #filtered (at the time the
 * filtered frame is expected on screen), in `window.__frameIndices`.
 */
async function noteFrameIndices(page) {
  await page.evaluate(({ bits, height }) => {
    const cells = 2 * bits;
    const canvas = document.createElement('canvas');
    canvas.width = cells;
    canvas.height = 1;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    // One pixel per cell, sampled at its centre; a pair of cells too alike gives no index.
    const indexOf = (video) => {
      context.drawImage(video, 0, 0, video.videoWidth, (video.videoHeight * height) / 480, 0, 0, cells, 1);
      const data = context.getImageData(0, 0, cells, 1).data;
      const brightness = (cell) => data[cell * 4] + data[cell * 4 + 1] + data[cell * 4 + 2];
      let index = 0;
      for (let bit = 0; bit < bits; bit += 1) {
        const contrast = brightness(2 * bit) - brightness(2 * bit + 1);
        if (Math.abs(contrast) < 240) return null;
        index = index * 2 + (contrast > 0 ? 1 : 0);
      }
      return index;
    };
    window.__frameIndices = { captured: [], shown: [] };
    const follow = (id, list, timeOf) => {
      const video = document.getElementById(id);
      const onFrame = (now, metadata) => {
        video.requestVideoFrameCallback(onFrame);
        const index = indexOf(video);
        if (index !== null) list.push({ index, at: timeOf(metadata) });
      };
      video.requestVideoFrameCallback(onFrame);
    };
    follow('raw', window.__frameIndices.captured, (metadata) => metadata.captureTime);
    follow('filtered', window.__frameIndices.shown, (metadata) => metadata.expectedDisplayTime);
  }, FRAME_INDEX_STRIP);
}

/**
 * The true round trip of each filtered frame shown between `from` and `to` (page time): from the
 * last capture of its index before it was shown. A frame whose capture the raw view missed
 * would match the clip's previous loop: it is left out.
 */
function trueRoundTrips({ captured, shown }, from, to) {
  const loopMs = CLIP_FRAMES * FRAME_INTERVAL_MS;
  const roundTrips = [];
  for (const frame of shown) {
    if (frame.at < from || frame.at > to) continue;
    const capture = captured.findLast((c) => c.index === frame.index && c.at <= frame.at);
    if (capture && frame.at - capture.at < loopMs / 2) roundTrips.push(frame.at - capture.at);
  }
  return roundTrips;
}

describe('latency users see', () => {
  it("p2pcamera.js's round trip per frame matches the frame index read off the screen", async (t) => {
    const pod = await ServerProcess.start('camera-pod', { filter: 'passthrough' });
    t.after(() => pod.stop());
    const relay = await DelayingRelay.start(RELAY_DELAY_MS);
    t.after(() => relay.close());
    const browser = await launchBrowser(indexedCameraVideo(t));
    t.after(() => browser.close());
    await routeOffersThrough(browser.context, relay);

    const page = await browser.context.newPage();
    await recordEvents(page);
    await page.goto(`${pod.url}/`);
    await page.click('#start');
    await waitForEvent(page, 'connected', 30000);
    await noteFrameIndices(page);
    // Both measurements settle (the first frames wait for a keyframe and the jitter buffer).
    await page.waitForTimeout(3000);

    const from = await page.evaluate(() => performance.now());
    await page.waitForTimeout(MEASURE_MS);
    const to = await page.evaluate(() => performance.now());
    const indices = await page.evaluate(() => window.__frameIndices);
    assert.ok(indices.captured.every((frame) => typeof frame.at === 'number'), 'the raw view gives no capture time');
    const truth = trueRoundTrips(indices, from, to);
    assert.ok(truth.length >= (MEASURE_MS / FRAME_INTERVAL_MS) / 2,
      `only ${truth.length} filtered frames with a readable index in ${MEASURE_MS} ms`);
    const reported = (await eventsNamed(page, 'latency'))
      .filter((event) => event.at >= from + 1000 && event.at <= to)
      .map((event) => event.detail);
    assert.ok(reported.length >= MEASURE_MS / 1000 - 2, `${reported.length} p2pcamera:latency events in ${MEASURE_MS} ms`);
    for (const latency of reported) {
      assert.equal(typeof latency.round_trip_ms, 'number', `no round trip: ${JSON.stringify(latency)}`);
      assert.equal(typeof latency.pod_ms, 'number', `no pod latency: ${JSON.stringify(latency)}`);
      assert.ok(latency.frames >= 15, `the round trip of only ${latency.frames} frames in a second`);
    }

    const trueMs = median(truth);
    const reportedMs = median(reported.map((latency) => latency.round_trip_ms));
    const podMs = median(reported.map((latency) => latency.pod_ms));
    t.diagnostic(`round trip: frame index ${trueMs.toFixed(1)} ms (${truth.length} frames), `
      + `p2pcamera.js ${reportedMs.toFixed(1)} ms, camera-pod ${podMs.toFixed(1)} ms`);
    assert.ok(Math.abs(reportedMs - trueMs) <= FRAME_INTERVAL_MS,
      `p2pcamera.js says ${reportedMs} ms, the frame index ${trueMs} ms`);
    // Its clock starts after the capture (when the frame leaves the encoder) and stops at the same
    // display: it exceeds the truth only by the medians' rounding to display refreshes (60 Hz).
    assert.ok(reportedMs <= trueMs + FRAME_INTERVAL_MS / 2,
      `p2pcamera.js says ${reportedMs} ms, more than the frame index's ${trueMs} ms`);
    // The relay alone holds each frame 2 x RELAY_DELAY_MS: a number below that is not the round trip.
    assert.ok(reportedMs >= 2 * RELAY_DELAY_MS && reportedMs < 2 * RELAY_DELAY_MS + 500,
      `implausible round trip ${reportedMs} ms through a ${2 * RELAY_DELAY_MS} ms relay`);
    assert.ok(podMs < reportedMs - 2 * RELAY_DELAY_MS, `camera-pod's part ${podMs} ms exceeds the round trip`);

    const current = await page.evaluate(() => P2PCamera.latency);
    assert.deepEqual(Object.keys(current).sort(), ['frames', 'pod_ms', 'round_trip_ms']);
    const shown = await eventually(() => page.textContent('#latency'), (text) => /\d+ ms round trip/.test(text),
      { what: 'the round trip on the demo page' });
    const shownMs = Number(shown.match(/(\d+) ms round trip/)[1]);
    assert.ok(shownMs >= 2 * RELAY_DELAY_MS, `the demo page shows ${shown}`);
    assert.match(shown, /the pod's part [\d.]+ ms/);
  });

  it('a page that forbids workers gets no round trip and its filtered camera as before', async (t) => {
    const pod = await ServerProcess.start('camera-pod', { filter: 'passthrough' });
    t.after(() => pod.stop());
    const browser = await launchBrowser(indexedCameraVideo(t));
    t.after(() => browser.close());
    await restrictIceToLoopback(browser.context);
    await browser.context.route(`${pod.url}/`, async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': "worker-src 'none'" } });
    });

    const page = await browser.context.newPage();
    await recordEvents(page);
    await page.addInitScript(() => {
      window.__refused = [];
      document.addEventListener('securitypolicyviolation', (event) => window.__refused.push(event.effectiveDirective));
    });
    await page.goto(`${pod.url}/`);
    await page.click('#start');
    await waitForEvent(page, 'connected', 30000);
    assert.ok((await returnedTrackInfo(page)).filtered, 'the page did not get the filtered track');
    assert.ok(await page.evaluate(() => window.__refused.includes('worker-src')), 'the page allowed the worker after all');
    const frames = await countFrames(page, '#filtered', 2000);
    assert.ok(frames >= 20, `only ${frames} filtered frames in 2 s`);

    const latency = await eventually(async () => (await eventsNamed(page, 'latency')).at(-1)?.detail ?? null,
      (detail) => detail.pod_ms !== null, { what: "a p2pcamera:latency event with the pod's part" });
    assert.equal(latency.round_trip_ms, null);
    assert.equal(latency.frames, 0);
    assert.equal((await page.evaluate(() => P2PCamera.latency)).round_trip_ms, null);
    assert.match(await page.textContent('#latency'), /does not measure the round trip/);
  });
});
