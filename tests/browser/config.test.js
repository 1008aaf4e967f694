// p2pcamera.js configuration against the real aiortc baseline server started with a token:
// script-tag attributes (router URL form, token, filter), waiting while the pod is not ready,
// and refusals for a wrong or missing token.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ServerProcess, launchBrowser, loopbackCandidatesOnly, recordEvents, restrictIceToLoopback, waitForEvent,
} from './harness.js';
import { cameraVideo } from './scenarios.js';

const TOKEN = 'p2pcamera-test-token';

async function startServerAndBrowser(t) {
  const server = await ServerProcess.start('baseline', { extraArgs: ['--token', TOKEN] });
  t.after(() => server.stop());
  const browser = await launchBrowser(cameraVideo(t));
  t.after(() => browser.close());
  return { server, browser };
}

describe('p2pcamera.js configuration', () => {
  it('uses data-session, data-token and data-filter, shows the raw camera while the pod is not ready, then connects', async (t) => {
    const { server, browser } = await startServerAndBrowser(t);
    const session = `${server.url}/v1/sessions/cameras/alice`;
    const page = `<!doctype html><video id="filtered" autoplay muted playsinline></video>
      <script src="/p2pcamera.js" data-endpoint="${server.url}" data-session="cameras/alice"
              data-token="${TOKEN}" data-filter="style:3"></script>`;
    await browser.context.route(`${server.url}/router-page`, (route) => route.fulfill({ body: page, contentType: 'text/html' }));
    await browser.context.route(session, (route) => route.fulfill({ json: { phase: 'Scheduling', reason: 'waiting for a GPU node' } }));
    // A stand-in for the router: the first offer finds the pod not ready (503 + Retry-After), later
    // offers are forwarded, headers and all, to the real server's /offer.
    const offers = [];
    await browser.context.route(`${session}/offer`, async (route) => {
      const request = route.request();
      const offer = JSON.parse(request.postData());
      offers.push({ authorization: await request.headerValue('authorization'), client: offer.client });
      if (offers.length === 1) {
        return route.fulfill({ status: 503, headers: { 'Retry-After': '1' }, json: { error: { code: 'not_ready', message: 'pod starting' } } });
      }
      offer.sdp = loopbackCandidatesOnly(offer.sdp);
      const response = await route.fetch({ url: `${server.url}/offer`, postData: JSON.stringify(offer) });
      const answer = await response.json();
      if (typeof answer.sdp === 'string') answer.sdp = loopbackCandidatesOnly(answer.sdp);
      return route.fulfill({ response, json: answer });
    });

    const tab = await browser.context.newPage();
    await recordEvents(tab);
    await tab.goto(`${server.url}/router-page`);
    const first = await tab.evaluate(async () => {
      window.__stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      document.getElementById('filtered').srcObject = window.__stream;
      const track = window.__stream.getVideoTracks()[0];
      return { state: P2PCamera.state, filtered: P2PCamera.isFiltered(track), live: track.readyState === 'live' };
    });
    assert.deepEqual(first, { state: 'reconnecting', filtered: false, live: true });

    const waiting = await waitForEvent(tab, 'waiting', 10000);
    assert.deepEqual([waiting.phase, waiting.reason], ['Scheduling', 'waiting for a GPU node']);
    await waitForEvent(tab, 'connected', 30000);
    const connected = await tab.evaluate(() => ({
      videoTracks: window.__stream.getVideoTracks().length,
      filtered: P2PCamera.isFiltered(window.__stream.getVideoTracks()[0]),
      clientId: P2PCamera.clientId,
    }));
    assert.equal(connected.videoTracks, 1);
    assert.ok(connected.filtered, 'the stream did not switch to the filtered track');
    assert.ok(offers.length >= 2);
    for (const offer of offers) {
      assert.equal(offer.authorization, `Bearer ${TOKEN}`);
      assert.equal(offer.client, connected.clientId, 'offers of one page load carry different client ids');
    }
    // data-filter="style:3" went over the data channel; the baseline has only passthrough and says so.
    const reply = await waitForEvent(tab, 'filter', 10000);
    assert.equal(reply.ok, false);
  });

  it('falls back with the status and code when the token is wrong or missing', async (t) => {
    const { server, browser } = await startServerAndBrowser(t);
    await restrictIceToLoopback(browser.context);
    for (const [token, status, code] of [['wrong-token', 403, 'wrong_token'], [null, 401, 'missing_token']]) {
      const tab = await browser.context.newPage();
      await recordEvents(tab);
      await tab.goto(`${server.url}/`);
      await tab.evaluate((value) => P2PCamera.configure({ token: value }), token);
      await tab.click('#start');
      const fallback = await waitForEvent(tab, 'fallback', 20000);
      assert.equal(fallback.reason, 'http_error');
      assert.equal(fallback.status, status);
      assert.equal(fallback.code, code);
      const track = await tab.evaluate(() => {
        const shown = document.getElementById('filtered').srcObject.getVideoTracks()[0];
        return { live: shown.readyState === 'live', filtered: P2PCamera.isFiltered(shown) };
      });
      assert.deepEqual(track, { live: true, filtered: false });
      await tab.close();
    }
  });
});
