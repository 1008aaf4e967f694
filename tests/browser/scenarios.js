// What a user of the demo page sees, run against one kind of server (camera-pod or the aiortc
// baseline). Each scenario starts its own server and browser and cleans both up, even on failure.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  QUADRANTS, ServerProcess, colourDistance, countFrames, eventsNamed, eventually, freePort,
  launchBrowser, measurePlaces, measureVideo, recordEvents, repoRoot, restrictIceToLoopback,
  returnedTrackInfo, saveArtifact, staticDir, venvPython, waitForEvent, writeCameraVideo,
} from './harness.js';

const CONNECT_TIMEOUT_MS = 30000;

/** The fake camera's video, written once per test file. */
export function cameraVideo(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-camera-'));
  const file = path.join(dir, 'camera.y4m');
  writeCameraVideo(file);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return file;
}

/**
 * A fake camera that shows a person: camera-pod's test portrait as a still Y4M clip, written by
 * tests/peers/portrait.py, with the places the tests look at (`{ file, width, height, places }`).
 */
export function portraitVideo(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-portrait-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'portrait.y4m');
  const script = path.join(repoRoot, 'tests', 'peers', 'portrait.py');
  const layout = JSON.parse(execFileSync(venvPython, [script, file], { encoding: 'utf8' }));
  return { file, ...layout };
}

async function startAll(t, kind, video, { filter } = {}) {
  const server = await ServerProcess.start(kind, { filter });
  t.after(() => server.stop());
  const browser = await launchBrowser(video);
  t.after(() => browser.close());
  await restrictIceToLoopback(browser.context);
  return { server, browser };
}

async function openDemo(context, url) {
  const page = await context.newPage();
  const warnings = await recordEvents(page);
  await page.goto(`${url}/`);
  return { page, warnings };
}

async function pressStartAndConnect(page) {
  await page.click('#start');
  return waitForEvent(page, 'connected', CONNECT_TIMEOUT_MS);
}

function showsCameraPicture(m) {
  return Object.entries(QUADRANTS).every(([name, colour]) => colourDistance(m.quadrants[name], colour) < 40);
}

/** The raw camera view shows the fake camera's picture (so comparisons with it mean something). */
async function assertRawCameraPicture(page) {
  const raw = await eventually(() => measureVideo(page, '#raw'), showsCameraPicture, { what: 'raw camera picture' });
  assert.ok(raw.greenFraction < 0.05, `raw camera is already green (${raw.greenFraction})`);
  return raw;
}

/** The filtered view shows the same picture as the raw camera, within codec error. */
function matchesRaw(page) {
  return eventually(
    () => measureVideo(page, '#filtered', '#raw'),
    (m) => m.meanAbsDiff !== null && m.meanAbsDiff < 20 && showsCameraPicture(m),
    { what: 'filtered picture matching the raw camera', timeout: 20000 },
  );
}

/**
 * Start -> the page gets the remote (filtered) track; passthrough shows the camera's picture with
 * live frames and stats; optionally selfie-replace turns it green; a second tab is refused with 409
 * and falls back; Stop closes the connection and stops the camera; a new page can start again.
 */
export async function filteredRoundTrip(t, kind, video, { greenReplace }) {
  const { server, browser } = await startAll(t, kind, video);
  const { page } = await openDemo(browser.context, server.url);
  await pressStartAndConnect(page);

  const returned = await returnedTrackInfo(page);
  assert.equal(returned.state, 'connected');
  assert.ok(returned.filtered, 'P2PCamera.isFiltered() is false for the track getUserMedia returned');
  assert.ok(returned.isReceiverTrack, 'getUserMedia did not return the peer connection\'s remote track');
  assert.ok(!returned.isCameraTrack, 'getUserMedia returned the camera\'s own track');

  await assertRawCameraPicture(page);
  const passthrough = await matchesRaw(page);
  assert.ok(passthrough.greenFraction < 0.05);
  const frames = await countFrames(page, '#filtered', 2000);
  assert.ok(frames >= 10, `only ${frames} filtered frames in 2 s`);
  const stats = await waitForEvent(page, 'stats', 5000);
  assert.equal(typeof stats, 'object');
  assert.ok(await page.locator('#stats dt').count() > 0, 'the demo page shows no stats');
  // Which way the media goes: on loopback, directly between host candidates.
  const shownPath = await eventually(
    () => page.evaluate(() => [...document.querySelectorAll('#stats dt')]
      .find((term) => term.textContent === 'path')?.nextElementSibling?.textContent ?? null),
    (text) => text !== null,
    { what: 'the connection path on the demo page' },
  );
  assert.equal(shownPath, 'direct (host/udp)');
  await page.screenshot({ path: saveArtifact(`browser-${kind}-passthrough.png`) });

  if (greenReplace) {
    await page.selectOption('#filter', { label: 'selfie-replace (green)' });
    const reply = await waitForEvent(page, 'filter', 10000);
    assert.equal(reply.ok, true, `selfie-replace refused: ${JSON.stringify(reply)}`);
    const green = await eventually(
      () => measureVideo(page, '#filtered'),
      (m) => m.greenFraction > 0.4,
      { what: 'green background in the filtered picture', timeout: 30000 },
    );
    const raw = await measureVideo(page, '#raw');
    assert.ok(green.greenFraction > raw.greenFraction + 0.35,
      `filtered green ${green.greenFraction} vs raw ${raw.greenFraction}`);
    await page.screenshot({ path: saveArtifact(`browser-${kind}-selfie-replace.png`) });
  }

  // A second tab (another client id) while the camera is live: refused, and it gets its camera.
  const second = await openDemo(browser.context, server.url);
  await second.page.click('#start');
  const fallback = await waitForEvent(second.page, 'fallback', CONNECT_TIMEOUT_MS);
  assert.equal(fallback.status, 409, `second client: ${JSON.stringify(fallback)}`);
  assert.equal(fallback.code, 'camera_busy');
  assert.ok(second.warnings.some((w) => w.includes('without the filter')), 'no console warning for the fallback');
  assert.equal((await returnedTrackInfo(second.page)).filtered, false);
  await second.page.close();
  assert.equal((await returnedTrackInfo(page)).connectionState, 'connected', 'the refused tab disturbed the live one');

  // Stop: the returned track's stop() closes the connection and stops the camera.
  await page.evaluate(() => {
    window.__stopped = { pc: P2PCamera.peerConnection, camera: P2PCamera.cameraStream.getVideoTracks()[0] };
  });
  await page.click('#stop');
  const afterStop = await page.evaluate(() => ({
    connectionState: window.__stopped.pc.connectionState,
    cameraState: window.__stopped.camera.readyState,
    state: P2PCamera.state,
  }));
  assert.deepEqual(afterStop, { connectionState: 'closed', cameraState: 'ended', state: 'idle' });
  assert.equal((await eventsNamed(page, 'stopped')).length, 1);

  // The server noticed: a new page (new client id) gets the camera within a few tries.
  await page.close();
  const again = await eventually(async () => {
    const retry = await openDemo(browser.context, server.url);
    await retry.page.click('#start');
    await retry.page.waitForFunction(() => window.__p2pcameraEvents.some((e) => e.name === 'connected' || e.name === 'fallback'),
      null, { timeout: CONNECT_TIMEOUT_MS });
    if ((await eventsNamed(retry.page, 'connected')).length > 0) return retry.page;
    await retry.page.close();
    return null;
  }, (p) => p !== null, { what: 'a new connection after Stop', timeout: 20000, interval: 1000 });
  assert.ok((await returnedTrackInfo(again)).filtered);
}

/**
 * The server goes away while connected: the page shows the raw camera and says it is
 * reconnecting; when the server is back, the filtered video returns without a page reload.
 */
export async function reconnectsAfterServerRestart(t, kind, video) {
  const { server, browser } = await startAll(t, kind, video);
  const { page } = await openDemo(browser.context, server.url);
  await pressStartAndConnect(page);
  await matchesRaw(page);

  await server.stop();
  const reconnecting = await waitForEvent(page, 'reconnecting', 45000);
  assert.equal(typeof reconnecting.attempt, 'number');
  const between = await returnedTrackInfo(page);
  assert.equal(between.state, 'reconnecting');
  assert.equal(between.filtered, false, 'the page kept the dead filtered track');
  assert.equal(between.trackState, 'live', 'the page was left without a live video track');
  await eventually(() => measureVideo(page, '#filtered', '#raw'), (m) => m.meanAbsDiff !== null && m.meanAbsDiff < 10,
    { what: 'raw camera shown while reconnecting' });

  await server.spawn();
  await page.waitForFunction(() => window.__p2pcameraEvents.filter((e) => e.name === 'connected').length >= 2,
    null, { timeout: 45000 });
  const back = await returnedTrackInfo(page);
  assert.ok(back.filtered && back.isReceiverTrack, `not filtered again: ${JSON.stringify(back)}`);
  await matchesRaw(page);
}

/** Nothing listens at the endpoint: the page still gets its camera, a warning and an event. */
export async function fallsBackWhenServerIsDown(t, video) {
  const browser = await launchBrowser(video);
  t.after(() => browser.close());
  const port = await freePort();
  // The page and script are served by the test; nothing listens on the port for /offer.
  const files = { '/': ['index.html', 'text/html'], '/p2pcamera.js': ['p2pcamera.js', 'text/javascript'] };
  await browser.context.route(`http://127.0.0.1:${port}/**`, async (route) => {
    const file = files[new URL(route.request().url()).pathname];
    if (!file) return route.continue();
    return route.fulfill({ path: path.join(staticDir, file[0]), contentType: file[1] });
  });
  const { page, warnings } = await openDemo(browser.context, `http://127.0.0.1:${port}`);
  await page.click('#start');
  const fallback = await waitForEvent(page, 'fallback', CONNECT_TIMEOUT_MS);
  assert.equal(fallback.reason, 'unreachable', JSON.stringify(fallback));
  assert.ok(warnings.some((w) => w.includes('without the filter')), `warnings: ${JSON.stringify(warnings)}`);
  assert.equal(await page.getAttribute('#status', 'data-state'), 'fallback');
  const returned = await returnedTrackInfo(page);
  assert.equal(returned.filtered, false);
  assert.equal(returned.trackState, 'live');
  await eventually(() => measureVideo(page, '#filtered'), showsCameraPicture, { what: 'camera picture in the page' });
  await page.screenshot({ path: saveArtifact('browser-fallback.png') });
}

/** The label of the option the demo page's filter menu shows. */
function shownFilter(page) {
  return page.$eval('#filter', (select) => select.selectedOptions[0]?.textContent ?? '');
}

/**
 * camera-pod starts with a filter (selfie-replace, green): the demo page's menu shows it before
 * Start, Start keeps it (the picture is green and the page sends no filter change), the menu
 * still shows it once the stats arrive, and a filter picked in the menu replaces it and stays.
 */
export async function keepsThePodsFilter(t, video) {
  const { server, browser } = await startAll(t, 'camera-pod', video, { filter: '{"filter":"selfie-replace","color":"#00ff00"}' });
  await eventually(async () => (await fetch(`${server.url}/readyz`)).status, (status) => status === 200,
    { what: 'camera-pod ready', timeout: 30000 });
  const { page } = await openDemo(browser.context, server.url);
  await eventually(() => shownFilter(page), (label) => label.includes('selfie-replace'),
    { what: "the pod's filter in the menu before Start" });

  await pressStartAndConnect(page);
  await assertRawCameraPicture(page);
  await eventually(() => measureVideo(page, '#filtered'), (m) => m.greenFraction > 0.4,
    { what: "the pod's green background in the filtered picture", timeout: 30000 });
  const stats = await waitForEvent(page, 'stats', 5000);
  assert.equal(stats.filter, 'selfie-replace');
  assert.ok((await shownFilter(page)).includes('selfie-replace'), `the menu shows ${await shownFilter(page)}`);
  assert.equal((await eventsNamed(page, 'filter')).length, 0, 'Start sent a filter change');
  await page.screenshot({ path: saveArtifact('browser-camera-pod-keeps-filter.png') });

  await pickFilter(page, 'passthrough');
  await matchesRaw(page);
  const before = (await eventsNamed(page, 'stats')).length;
  await page.waitForFunction((count) => window.__p2pcameraEvents.filter((e) => e.name === 'stats').length > count,
    before, { timeout: 5000 });
  assert.equal(await shownFilter(page), 'passthrough');
}

/** Picks a filter in the demo page's menu and waits for camera-pod's answer to that change. */
async function pickFilter(page, label) {
  const before = (await eventsNamed(page, 'filter')).length;
  await page.selectOption('#filter', { label });
  await page.waitForFunction((count) => window.__p2pcameraEvents.filter((e) => e.name === 'filter').length > count,
    before, { timeout: 10000 });
  const reply = (await eventsNamed(page, 'filter')).at(-1).detail;
  assert.equal(reply.ok, true, `${label} refused: ${JSON.stringify(reply)}`);
}

/** `#rrggbb` as [r, g, b]. */
function rgbOf(hex) {
  return [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
}

/**
 * The camera shows a person (the portrait): `pose` draws over her head and torso and leaves the
 * wall beside her alone; `body-parts` paints her face in the head colour and her chest in the
 * torso colour, at its default 70 % over the camera picture.
 */
export async function bodyFiltersPaintThePerson(t, portrait) {
  const { server, browser } = await startAll(t, 'camera-pod', portrait.file);
  const { page } = await openDemo(browser.context, server.url);
  await pressStartAndConnect(page);
  const measure = () => measurePlaces(page, '#filtered', '#raw', portrait);
  await eventually(measure, (m) => m.person.changed < 0.05, { what: 'passthrough picture of the portrait' });

  await pickFilter(page, 'pose (skeleton)');
  const pose = await eventually(measure,
    (m) => m.person.changed >= 0.03 && m.face.changed >= 0.1 && m.wall.changed <= 0.01,
    { what: 'skeleton over her head and torso, none on the wall', timeout: 30000 });
  assert.ok(pose.person.changed <= 0.4, `the skeleton covered ${pose.person.changed} of her head and torso`);
  await page.screenshot({ path: saveArtifact('browser-camera-pod-pose.png') });

  await pickFilter(page, 'body-parts');
  const painted = (m, name) => {
    const { colour, reference } = m[name];
    const expected = rgbOf(portrait.places[name].colour).map((c, i) => 0.7 * c + 0.3 * reference[i]);
    return colourDistance(colour, expected) <= 20;
  };
  await eventually(measure,
    (m) => painted(m, 'face') && painted(m, 'chest') && m.person.changed >= 0.5 && m.wall.changed <= 0.01,
    { what: 'head and torso colours on her face and chest, none on the wall', timeout: 30000 });
  await page.screenshot({ path: saveArtifact('browser-camera-pod-body-parts.png') });
}
