// p2pcamera.js configuration against the real aiortc baseline server started with a token:
// script-tag attributes (router URL form, token, filter), waiting while the pod is not ready,
// the router's ICE servers and the reported connection path, trickle ICE (on by default, off with
// trickle: false), and refusals for a wrong or missing token.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ServerProcess, SlowStunServer, freePort, launchBrowser, loopbackCandidatesOnly, recordEvents, restrictIceToLoopback,
  waitForEvent,
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

  it('trickles a candidate gathered late after the answer, waits for it with trickle:false, and shrugs off a server without the route', async (t) => {
    const { server, browser } = await startServerAndBrowser(t);
    // Its reflexive candidate comes 600 ms after the host ones, as a distant TURN relay's would.
    // Chromium stops gathering once a pair connects, so the answer is held until the STUN server
    // answered: the candidate comes before the answer and must wait for it.
    const stunDelayMs = 600;
    const stun = await SlowStunServer.start(stunDelayMs);
    t.after(() => stun.close());
    const traffic = [];
    let candidatesStatus = 204;
    let stunAnsweredBefore = 0;
    await browser.context.route(`${server.url}/offer`, async (route) => {
      const offer = JSON.parse(route.request().postData());
      const posted = { kind: 'offer', at: Date.now(), sdp: offer.sdp, authorization: await route.request().headerValue('authorization') };
      traffic.push(posted);
      offer.sdp = loopbackCandidatesOnly(offer.sdp);
      const response = await route.fetch({ postData: JSON.stringify(offer) });
      const answer = await response.json();
      if (typeof answer.sdp === 'string') answer.sdp = loopbackCandidatesOnly(answer.sdp);
      await until(() => stun.answered > stunAnsweredBefore, 'the STUN server answered');
      await sleep(100);
      posted.answeredAt = Date.now();
      return route.fulfill({ response, json: answer });
    });
    // A stand-in for camera-pod's /candidates (the baseline server has none).
    await browser.context.route(`${server.url}/candidates`, async (route) => {
      traffic.push({
        kind: 'candidates', at: Date.now(), body: JSON.parse(route.request().postData()),
        authorization: await route.request().headerValue('authorization'),
      });
      return candidatesStatus === 204
        ? route.fulfill({ status: 204 })
        : route.fulfill({ status: candidatesStatus, json: { error: { code: 'not_found', message: 'no such route' } } });
    });
    const page = `<!doctype html><script src="/p2pcamera.js" data-endpoint="${server.url}" data-token="${TOKEN}"></script>`;
    await browser.context.route(`${server.url}/trickle-page`, (route) => route.fulfill({ body: page, contentType: 'text/html' }));
    const tab = await browser.context.newPage();
    const warnings = await recordEvents(tab);
    await tab.goto(`${server.url}/trickle-page`);
    assert.deepEqual(await tab.evaluate(() => [P2PCamera.config.trickle, P2PCamera.config.trickleAfterMs]), [true, 30]);
    const offTab = await browser.context.newPage();
    await browser.context.route(`${server.url}/no-trickle-page`, (route) => route.fulfill({
      body: page.replace('<script ', '<script data-trickle="false" '), contentType: 'text/html',
    }));
    await offTab.goto(`${server.url}/no-trickle-page`);
    assert.equal(await offTab.evaluate(() => P2PCamera.config.trickle), false, 'data-trickle="false" ignored');
    await offTab.close();

    const candidateLines = (sdp) => sdp.split(/\r?\n/).filter((line) => line.startsWith('a=candidate:'));
    const typeOf = (candidate) => candidate.split(' ')[7];
    // One page, so that each connection (same client id) replaces the previous one on the server.
    const connect = async (options) => {
      traffic.length = 0;
      stunAnsweredBefore = stun.answered;
      const startedAt = Date.now();
      await tab.evaluate(async ({ iceServers, trickle }) => {
        window.__p2pcameraEvents.length = 0;
        P2PCamera.configure({ iceServers, trickle });
        window.__stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      }, { iceServers: [{ urls: stun.url }], ...options });
      await waitForEvent(tab, 'connected', 30000);
      const offers = traffic.filter((entry) => entry.kind === 'offer');
      assert.equal(offers.length, 1);
      return { startedAt, offer: offers[0] };
    };

    // Trickle on (the default): the offer leaves with the host candidates, before the STUN answer.
    const on = await connect({ trickle: true });
    assert.ok(on.offer.at - on.startedAt < stunDelayMs, `the offer waited ${on.offer.at - on.startedAt} ms`);
    const offered = candidateLines(on.offer.sdp);
    assert.ok(offered.some((line) => typeOf(line) === 'host' && line.includes(' 127.0.0.1 ')), offered.join('\n'));
    assert.ok(!offered.some((line) => typeOf(line) === 'srflx'), `the reflexive candidate is in the offer:\n${offered.join('\n')}`);
    const trickled = await eventuallyTrickled(traffic, 'srflx');
    const ufrag = /^a=ice-ufrag:(\S+)/m.exec(on.offer.sdp)[1];
    const sent = trickled.flatMap((request) => request.body.candidates);
    for (const request of trickled) {
      assert.equal(request.body.ufrag, ufrag);
      assert.equal(request.authorization, `Bearer ${TOKEN}`);
      assert.ok(request.at >= on.offer.answeredAt, 'a candidate went out before the answer came');
      assert.ok(request.body.candidates.length >= 1 && request.body.candidates.length <= 16);
    }
    const reflexive = sent.filter(({ candidate }) => typeOf(candidate) === 'srflx');
    for (const { candidate, sdpMid, sdpMLineIndex } of reflexive) {
      assert.match(candidate, /^candidate:\S+ 1 udp \d+ 127\.0\.0\.2 \d+ typ srflx /);
      assert.deepEqual([sdpMid, sdpMLineIndex], ['0', 0]);
    }
    assert.ok(sent.length <= 16, `${sent.length} candidates trickled`);
    for (const { candidate } of sent) {
      assert.ok(!offered.some((line) => line.startsWith(`a=${candidate.split(' ').slice(0, 8).join(' ')}`)), `sent twice: ${candidate}`);
    }

    // Trickle off: today's behaviour, the offer waits for the STUN answer and carries it.
    const off = await connect({ trickle: false });
    assert.ok(off.offer.at - off.startedAt >= stunDelayMs, `the offer left after ${off.offer.at - off.startedAt} ms`);
    assert.ok(candidateLines(off.offer.sdp).some((line) => typeOf(line) === 'srflx' && line.includes(' 127.0.0.2 ')),
      candidateLines(off.offer.sdp).join('\n'));
    await sleep(1000);
    assert.deepEqual(traffic.filter((entry) => entry.kind === 'candidates'), []);

    // A server without the route (404): one warning, and the connection still stands.
    candidatesStatus = 404;
    warnings.length = 0;
    await connect({ trickle: true });
    await eventuallyTrickled(traffic, null);
    await sleep(1000);
    assert.equal(traffic.filter((entry) => entry.kind === 'candidates').length, 1, 'trickled on after a 404');
    assert.deepEqual(warnings.filter((text) => text.includes('trickl')), ['[p2pcamera] not trickling ICE candidates: 404 not_found']);
    assert.equal(await tab.evaluate(() => P2PCamera.state), 'connected');
    assert.ok(await tab.evaluate(() => P2PCamera.isFiltered(window.__stream.getVideoTracks()[0])));
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

function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

/** Resolves once `condition()` holds (checked every 20 ms); fails after 10 s. */
async function until(condition, what) {
  const deadline = Date.now() + 10000;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `not within 10 s: ${what}`);
    await sleep(20);
  }
}

/** The trickle requests in `traffic`, once one trickled a candidate of `type` (null: any). */
async function eventuallyTrickled(traffic, type) {
  const trickledOne = (entry) => entry.kind === 'candidates'
    && entry.body.candidates.some(({ candidate }) => type === null || candidate.split(' ')[7] === type);
  await until(() => traffic.some(trickledOne), `a ${type ?? ''} candidate trickled`);
  return traffic.filter((entry) => entry.kind === 'candidates');
}
