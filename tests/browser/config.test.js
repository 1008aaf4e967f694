// p2pcamera.js configuration against the real aiortc baseline server started with a token:
// script-tag attributes (router URL form, token, filter), waiting while the pod is not ready,
// the router's ICE servers and the reported connection path, and refusals for a wrong or
// missing token.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ServerProcess, freePort, launchBrowser, loopbackCandidatesOnly, recordEvents, restrictIceToLoopback, waitForEvent,
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

  it('asks the router for ICE servers, uses them, and reports the path the connection took', async (t) => {
    const { server, browser } = await startServerAndBrowser(t);
    // A TURN server nobody listens on: gathering gives up on it at once, and the camera still
    // connects directly (a host pair over UDP) as ICE prefers it anyway.
    const turn = { urls: [`turn:127.0.0.1:${await freePort()}?transport=tcp`], username: '1900000000:cameras/alice', credential: 'c3VwZXI=' };
    const requests = [];
    const forwardOffer = async (route) => {
      requests.push('offer');
      const offer = JSON.parse(route.request().postData());
      offer.sdp = loopbackCandidatesOnly(offer.sdp);
      const response = await route.fetch({ url: `${server.url}/offer`, postData: JSON.stringify(offer) });
      const answer = await response.json();
      if (typeof answer.sdp === 'string') answer.sdp = loopbackCandidatesOnly(answer.sdp);
      return route.fulfill({ response, json: answer });
    };
    const page = `<!doctype html><script src="/p2pcamera.js" data-endpoint="${server.url}"
      data-session="cameras/alice" data-token="${TOKEN}"></script>`;
    await browser.context.route(`${server.url}/ice-page`, (route) => route.fulfill({ body: page, contentType: 'text/html' }));
    const tab = await browser.context.newPage();
    await recordEvents(tab);
    await tab.goto(`${server.url}/ice-page`);
    // bob's router predates the route: the real server answers 404. One page, so that bob's
    // offer (same client id) replaces alice's connection on the one-camera server.
    for (const [name, iceServers] of [['alice', { iceServers: [turn], ttl: 600 }], ['bob', null]]) {
      const session = `${server.url}/v1/sessions/cameras/${name}`;
      if (iceServers) {
        await browser.context.route(`${session}/ice-servers`, async (route) => {
          requests.push(`ice-servers ${await route.request().headerValue('authorization')}`);
          return route.fulfill({ json: iceServers });
        });
      }
      await browser.context.route(`${session}/offer`, forwardOffer);
      requests.length = 0;
      await tab.evaluate(async (value) => {
        window.__p2pcameraEvents.length = 0;
        P2PCamera.configure({ session: value });
        window.__stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      }, `cameras/${name}`);
      await waitForEvent(tab, 'connected', 30000);
      const used = await tab.evaluate(() => P2PCamera.peerConnection.getConfiguration().iceServers
        .map(({ urls, username, credential }) => ({ urls, username, credential })));
      if (iceServers) {
        assert.deepEqual(requests, [`ice-servers Bearer ${TOKEN}`, 'offer']);
        assert.deepEqual(used, [turn]);
      } else {
        assert.deepEqual(requests, ['offer']);
        assert.deepEqual(used, []);
      }
      const stats = await waitForEvent(tab, 'stats', 10000);
      const direct = { local: 'host', remote: 'host', protocol: 'udp' };
      assert.deepEqual(stats.path, direct, `stats event: ${JSON.stringify(stats)}`);
      assert.deepEqual(await tab.evaluate(() => P2PCamera.path), direct);
    }
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
