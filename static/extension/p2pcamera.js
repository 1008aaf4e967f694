/*
 * p2pcamera.js: a live AI video filter for any page's camera, run on a remote GPU.
 *
 * Load it with one tag, before the page asks for the camera:
 *
 *   <script src="https://camera.example/p2pcamera.js"
 *           data-endpoint="https://camera.example"   (camera-pod or router base URL; default: the
 *                                                      origin this script was loaded from)
 *           data-session="namespace/name"            (router form: /v1/sessions/<ns>/<name>/offer)
 *           data-token="..."                         (sent as Authorization: Bearer)
 *           data-filter="style:3"                    (filter to apply once connected)
 *           data-trickle="true"                      (trickle ICE; see below)
 *           data-enabled="true"></script>
 *
 * It wraps navigator.mediaDevices.getUserMedia. When video is requested it sends the camera track
 * over WebRTC to the endpoint and resolves with a MediaStream whose video track is the filtered
 * one coming back (audio tracks stay the local ones). Stopping that video track stops the camera
 * and closes the connection. If the endpoint cannot be used, the page gets its own camera stream,
 * a console warning and a `p2pcamera:fallback` event: the page is never left without video. If an
 * established connection fails, the raw camera is shown while a new offer is tried with bounded
 * backoff (`p2pcamera:reconnecting`, then `p2pcamera:connected`).
 *
 * In the router form (data-session) it first asks the router for ICE servers
 * (`GET /v1/sessions/<ns>/<name>/ice-servers`: TURN relays with a short-lived credential for the
 * session) and gives them, after any from configure({iceServers}), to the peer connection, so a
 * network that blocks UDP still connects through the relay over TCP or TLS. A router without the
 * route (404) or camera-pod directly: no ICE servers, as before. The answer is reused while at
 * least half its lifetime (`ttl`) remains. Which way the connection took is `P2PCamera.path` and
 * the `path` of every `p2pcamera:stats` event: `{local, remote, protocol}` with the candidate
 * types (host, srflx, prflx, relay) and the protocol this browser's packets travel on (udp, or
 * for a relay the transport to the TURN server: udp, tcp or tls).
 *
 * Trickle ICE (`trickle: true`, the default): the offer goes out once candidate gathering is
 * complete or `trickleAfterMs` (30) passed, whichever comes first, so that no connection waits for
 * TURN allocations (round trips to the relay) before its offer leaves; without TURN, or on a fast
 * network, gathering completes first and the offer carries every candidate as before. Candidates
 * gathered after the offer went out wait for the answer, then go, a few at a time (coalesced for
 * 5 ms), to `POST <endpoint>/candidates` (router form: `/v1/sessions/<ns>/<name>/candidates`),
 * with the same Authorization header: `{"ufrag": <the offer's a=ice-ufrag>, "candidates":
 * [{candidate, sdpMid, sdpMLineIndex}]}`, answered 204; at most 16 per connection, only UDP ones
 * (a relay's included: its address is UDP whatever the way to the relay) of the transport the
 * answer bundles, no mDNS (`.local`) ones (the pod cannot resolve them). The pod's answer stays
 * complete. A failure is logged once and never touches the connection; 404 or 405 (a server
 * without the route) and 410 `connection_gone` (the connection is no longer the pod's) end the
 * trickling for that connection, which still connects: the pod learns a relayed address from the
 * relay's connectivity checks. `trickle: false` waits for complete gathering, as before.
 *
 * Latency as the user sees it: `P2PCamera.latency` and the `p2pcamera:latency` event (once a
 * second while connected) give `{round_trip_ms, pod_ms, frames}`. `round_trip_ms` is the median,
 * over the last second, of the browser's own round trip per filtered frame: from the moment the
 * camera frame left the encoder (Chromium tells an encoded transform no capture time, so capture
 * and encoding, a few ms, are not in it) to the moment the filtered frame is expected on screen
 * in the page's <video> of the filtered track; `frames` is how many frames that median is of. An
 * encoded transform (RTCRtpScriptTransform, in a worker) reads each outgoing frame's RTP
 * timestamp and passes the frame on unchanged; camera-pod keeps that timestamp on the filtered
 * frame, which requestVideoFrameCallback reports as it shows. A page that shows the filtered
 * track in no <video> of its document gets a hidden one's time instead, when the frame was ready
 * to show (the screen's next refresh not counted). A browser without these APIs, or a page whose
 * policy forbids the worker (CSP, Trusted Types), gets `round_trip_ms: null` and an unchanged
 * camera path. `pod_ms` is camera-pod's own part (`pod_latency_ms` of the last stats).
 *
 * API (window.P2PCamera): configure(options), setFilter(spec), stop(), isFiltered(track),
 * state, path, latency, cameraStream, peerConnection, clientId, config. Events on window:
 * p2pcamera:connecting, p2pcamera:connected, p2pcamera:fallback, p2pcamera:waiting,
 * p2pcamera:reconnecting, p2pcamera:stats, p2pcamera:latency, p2pcamera:filter, p2pcamera:stopped.
 */
(() => {
  'use strict';

  if (window.P2PCamera || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return;
  }

  const LOG_PREFIX = '[p2pcamera]';
  const DATA_CHANNEL_LABEL = 'p2pcamera';

  const script = document.currentScript;
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;

  const config = {
    endpoint: scriptOrigin,
    session: null,
    token: null,
    filter: null,
    enabled: true,
    codec: null,
    iceServers: [],
    connectTimeoutMs: 15000,
    iceGatheringTimeoutMs: 5000,
    reconnectMinDelayMs: 500,
    reconnectMaxDelayMs: 15000,
    disconnectedGraceMs: 3000,
    pingIntervalMs: 2000,
    filterReplyTimeoutMs: 5000,
    measureLatency: true,
    trickle: true,
    trickleAfterMs: 30,
  };

  /** How often `p2pcamera:latency` reports, and the span its round trip is the median of. */
  const LATENCY_INTERVAL_MS = 1000;
  /** Outgoing frames remembered by RTP timestamp until their filtered frame shows: 2 s at 30 fps. */
  const REMEMBERED_SENT_FRAMES = 64;
  /** How long the frame stamper's worker may take to start; a connection goes on without it. */
  const STAMPER_START_TIMEOUT_MS = 1000;
  /** Most candidates one connection trickles, and the most one request carries (the pod's limit). */
  const MAX_TRICKLED_CANDIDATES = 16;
  /** How long a trickled candidate waits for others gathered right after it, to share a request. */
  const TRICKLE_COALESCE_MS = 5;

  /**
   * The frame stamper's worker. Every encoded camera frame passes through unchanged; its RTP
   * timestamp and the moment it went by (ms since the epoch: `performance.timeOrigin +
   * performance.now()` reads the same clock in every context of the page) go to the port that the
   * connection's transform was given. It says `ready` once it handles transforms: a transform
   * whose worker does not run would hold the camera's frames for good.
   */
  const FRAME_STAMPER_SOURCE = `'use strict';
self.onrtctransform = ({ transformer }) => {
  const port = transformer.options.port;
  transformer.readable.pipeThrough(new TransformStream({
    transform(frame, controller) {
      const sentAt = performance.timeOrigin + performance.now();
      let rtpTimestamp = null;
      try {
        rtpTimestamp = frame.getMetadata().rtpTimestamp ?? frame.timestamp;
      } catch {
        // A frame without metadata is passed on, only not measured.
      }
      controller.enqueue(frame);
      if (typeof rtpTimestamp === 'number') port.postMessage({ rtpTimestamp, sentAt });
    },
  })).pipeTo(transformer.writable).catch(() => {});
};
self.postMessage('ready');
`;

  /** The parameter a short filter spec such as `style:3` sets, per filter. */
  const FILTER_PARAMETERS = {
    style: 'style',
    'selfie-blur': 'strength',
    'selfie-replace': 'color',
    pose: 'model',
    'body-parts': 'opacity',
  };

  /**
   * Parses a filter given as text: `passthrough`, `style:3`, `selfie-blur:4`,
   * `selfie-replace:#00ff00`, `pose:full`, `body-parts:50` (opacity), or a JSON object such as
   * `{"filter":"style","style":3}`.
   */
  function parseFilterSpec(spec) {
    if (spec === null || spec === undefined || spec === '') {
      return null;
    }
    if (typeof spec === 'object') {
      return { ...spec };
    }
    const text = String(spec).trim();
    if (text.startsWith('{')) {
      return JSON.parse(text);
    }
    const separator = text.indexOf(':');
    if (separator < 0) {
      return { filter: text };
    }
    const name = text.slice(0, separator);
    const parameter = text.slice(separator + 1);
    const key = FILTER_PARAMETERS[name];
    if (!key) {
      throw new Error(`filter ${name} takes no short parameter; give a JSON object instead`);
    }
    return { filter: name, [key]: Number.isNaN(Number(parameter)) ? parameter : Number(parameter) };
  }

  function parseBoolean(text) {
    return !/^(false|0|no|off)$/i.test(String(text).trim());
  }

  function readScriptAttributes() {
    if (!script) {
      return;
    }
    const data = script.dataset;
    if (data.endpoint) config.endpoint = data.endpoint;
    if (data.session) config.session = data.session;
    if (data.token) config.token = data.token;
    if (data.codec) config.codec = data.codec;
    if (data.enabled !== undefined) config.enabled = parseBoolean(data.enabled);
    if (data.trickle !== undefined) config.trickle = parseBoolean(data.trickle);
    if (data.filter) {
      try {
        config.filter = parseFilterSpec(data.filter);
      } catch (error) {
        console.warn(LOG_PREFIX, 'ignoring data-filter:', error);
      }
    }
  }

  function randomClientId() {
    if (crypto.randomUUID) {
      return crypto.randomUUID();
    }
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** One id per page load, sent with every offer so that a reconnect replaces the old connection. */
  const clientId = randomClientId();

  function emit(name, detail) {
    window.dispatchEvent(new CustomEvent(`p2pcamera:${name}`, { detail }));
  }

  /** A failure to (re)connect: `reason` is a stable short word, `retryable` says whether to wait. */
  class ConnectError extends Error {
    constructor(reason, message, { status = null, code = null, retryAfterMs = null, retryable = false } = {}) {
      super(message);
      this.name = 'P2PCameraConnectError';
      this.reason = reason;
      this.status = status;
      this.code = code;
      this.retryAfterMs = retryAfterMs;
      this.retryable = retryable;
    }

    get detail() {
      return { reason: this.reason, message: this.message, status: this.status, code: this.code };
    }
  }

  function trimSlash(url) {
    return String(url).replace(/\/+$/, '');
  }

  function sessionPath() {
    const parts = String(config.session).split('/').filter(Boolean);
    if (parts.length !== 2) {
      throw new ConnectError('bad_config', `session must be "namespace/name", got "${config.session}"`);
    }
    return `/v1/sessions/${parts.map(encodeURIComponent).join('/')}`;
  }

  /** `<endpoint>/<leaf>`, or in the router form `<endpoint>/v1/sessions/<ns>/<name>/<leaf>`. */
  function endpointUrl(leaf) {
    const base = trimSlash(config.endpoint);
    return config.session ? `${base}${sessionPath()}/${leaf}` : `${base}/${leaf}`;
  }

  function offerUrl() {
    return endpointUrl('offer');
  }

  function authHeaders() {
    return config.token ? { Authorization: `Bearer ${config.token}` } : {};
  }

  /** Router form only: the session's phase and reason, for "waiting for a GPU" messages. */
  async function fetchSessionStatus(signal) {
    if (!config.session) {
      return null;
    }
    try {
      const response = await fetch(`${trimSlash(config.endpoint)}${sessionPath()}`, {
        headers: authHeaders(),
        signal,
      });
      return response.ok ? await response.json() : null;
    } catch {
      return null;
    }
  }

  /** The router's last ICE servers answer: { key (endpoint, session, token), servers, freshUntil }. */
  let routerIceServers = null;

  /**
   * The ICE servers the router hands out for the session (router form only): TURN URLs with a
   * credential. 404 (a router without the route) and an empty list are remembered for the page;
   * a credential is reused while at least half its `ttl` remains. Any other failure gives no
   * servers now: the offer that follows reports what is wrong.
   */
  async function fetchIceServers(signal) {
    if (!config.session) {
      return [];
    }
    const url = `${trimSlash(config.endpoint)}${sessionPath()}/ice-servers`;
    const key = `${url} ${config.token}`;
    if (routerIceServers?.key === key && performance.now() < routerIceServers.freshUntil) {
      return routerIceServers.servers;
    }
    let servers = [];
    let freshForMs = 0;
    try {
      const response = await fetch(url, { headers: authHeaders(), signal });
      if (response.ok) {
        const body = await response.json();
        servers = Array.isArray(body?.iceServers) ? body.iceServers : [];
        const ttl = Number(body?.ttl);
        freshForMs = servers.length === 0 ? Infinity : (Number.isFinite(ttl) && ttl > 0 ? ttl * 500 : 0);
      } else if (response.status === 404) {
        freshForMs = Infinity;
      }
    } catch {
      if (signal.aborted) throw signal.reason;
    }
    routerIceServers = { key, servers, freshUntil: performance.now() + freshForMs };
    return servers;
  }

  /**
   * The candidate pair ICE selected, from the connection's stats: local and remote candidate
   * type and the protocol this browser's packets travel on (for a relay candidate, the transport
   * to the TURN server). Null while none is selected.
   */
  async function selectedPath(pc) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((report) => {
      if (report.type === 'transport' && report.selectedCandidatePairId) {
        pair = stats.get(report.selectedCandidatePairId) ?? pair;
      }
    });
    if (!pair) {
      // Browsers without transport stats (Firefox) flag the pair itself.
      stats.forEach((report) => {
        if (report.type === 'candidate-pair' && (report.selected || (report.nominated && report.state === 'succeeded'))) {
          pair ??= report;
        }
      });
    }
    const local = pair && stats.get(pair.localCandidateId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    if (!local || !remote) {
      return null;
    }
    const relayed = local.candidateType === 'relay';
    return {
      local: local.candidateType,
      remote: remote.candidateType,
      protocol: relayed && local.relayProtocol ? local.relayProtocol : local.protocol,
    };
  }

  /** The median of `values` (not empty). */
  function median(values) {
    const sorted = [...values].sort((a, b) => a - b);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  }

  /**
   * Starts the frame stamper's worker; resolves with it once it runs, or with null where the
   * browser has no encoded transforms or frame callbacks, or the page does not allow the worker.
   * Never rejects.
   */
  function startFrameStamper() {
    if (typeof RTCRtpScriptTransform !== 'function' || typeof Worker !== 'function'
      || typeof HTMLVideoElement.prototype.requestVideoFrameCallback !== 'function') {
      return Promise.resolve(null);
    }
    let url = null;
    let worker;
    try {
      url = URL.createObjectURL(new Blob([FRAME_STAMPER_SOURCE], { type: 'text/javascript' }));
      worker = new Worker(url, { name: 'p2pcamera frame stamper' });
    } catch {
      // The page's Content-Security-Policy or Trusted Types refuse the worker.
      if (url) URL.revokeObjectURL(url);
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      let timer = null;
      const settle = (running) => {
        if (timer === null) return;
        clearTimeout(timer);
        timer = null;
        URL.revokeObjectURL(url);
        if (!running) worker.terminate();
        resolve(running ? worker : null);
      };
      timer = setTimeout(() => settle(false), STAMPER_START_TIMEOUT_MS);
      worker.addEventListener('message', (event) => settle(event.data === 'ready'), { once: true });
      worker.addEventListener('error', () => settle(false), { once: true });
    });
  }

  /** Ends the worker that `startFrameStamper` gave, if any. */
  function endFrameStamper(stamper) {
    stamper.then((worker) => worker?.terminate());
  }

  /** Whether `video` plays `track`. */
  function plays(video, track) {
    return video.srcObject instanceof MediaStream && video.srcObject.getVideoTracks().includes(track);
  }

  /**
   * The browser's own round trip per filtered frame of one connection: from the moment a camera
   * frame left the encoder (the stamper's worker sees it go by) to the moment the filtered frame
   * with the same RTP timestamp shows. That moment is the frame's expected display time on the
   * page's own <video> of the filtered track; where the page shows the track in none (a copy of
   * the track, a canvas), a hidden <video> stands in with the time the frame was ready to show
   * (its presentation time: a hidden element's display time can be a frame late), which leaves
   * out the wait for the screen's next refresh.
   */
  class RoundTripMeter {
    /**
     * Puts the stamper on `sender`: call it in the same task as addTransceiver (Chromium ignores
     * a transform set later). Null when the browser refuses the transform.
     */
    static install(stamper, sender) {
      try {
        return new RoundTripMeter(stamper, sender);
      } catch (error) {
        console.warn(LOG_PREFIX, 'no round-trip latency:', error?.message ?? error);
        return null;
      }
    }

    constructor(stamper, sender) {
      const channel = new MessageChannel();
      sender.transform = new RTCRtpScriptTransform(stamper, { port: channel.port2 }, [channel.port2]);
      this.port = channel.port1;
      /** RTP timestamp -> when that camera frame left the encoder, oldest first. */
      this.sentAt = new Map();
      /** `{shownAt, ms}` per filtered frame matched, oldest first. */
      this.samples = [];
      this.track = null;
      /** The <video> followed, its pending frame callback, and the hidden one of our own. */
      this.video = null;
      this.frameRequest = null;
      this.hiddenVideo = null;
      this.port.onmessage = ({ data }) => this.frameSent(data.rtpTimestamp, data.sentAt);
    }

    frameSent(rtpTimestamp, sentAt) {
      if (this.sentAt.size >= REMEMBERED_SENT_FRAMES) {
        this.sentAt.delete(this.sentAt.keys().next().value);
      }
      this.sentAt.set(rtpTimestamp, sentAt);
    }

    /** Starts matching the frames of the filtered `track` as they show. */
    watch(track) {
      this.track = track;
      this.followShownVideo();
    }

    /**
     * Follows the page's <video> of the filtered track, or the hidden one while the page has
     * none. Called again once an interval: pages attach, replace and drop their elements.
     */
    followShownVideo() {
      const pageVideo = [...document.querySelectorAll('video')].find((video) => plays(video, this.track));
      if (pageVideo && pageVideo === this.video) return;
      if (!pageVideo && this.hiddenVideo && this.hiddenVideo === this.video) return;
      this.unfollow();
      if (pageVideo) {
        this.dropHiddenVideo();
        this.follow(pageVideo, 'expectedDisplayTime');
      } else {
        const hidden = document.createElement('video');
        hidden.muted = true;
        hidden.playsInline = true;
        hidden.srcObject = new MediaStream([this.track]);
        hidden.play().catch(() => {});
        this.hiddenVideo = hidden;
        this.follow(hidden, 'presentationTime');
      }
    }

    /** Matches each frame `video` shows, at the time its metadata field `shownTime` gives. */
    follow(video, shownTime) {
      this.video = video;
      const onFrame = (now, metadata) => {
        if (this.video !== video) return;
        this.frameRequest = video.requestVideoFrameCallback(onFrame);
        const sentAt = this.sentAt.get(metadata.rtpTimestamp);
        if (sentAt === undefined) return;
        this.sentAt.delete(metadata.rtpTimestamp);
        const shownAt = performance.timeOrigin + (metadata[shownTime] ?? now);
        this.samples.push({ shownAt, ms: shownAt - sentAt });
        while (this.samples[0].shownAt < shownAt - LATENCY_INTERVAL_MS) this.samples.shift();
      };
      this.frameRequest = video.requestVideoFrameCallback(onFrame);
    }

    unfollow() {
      if (this.video && this.frameRequest !== null) this.video.cancelVideoFrameCallback(this.frameRequest);
      this.video = null;
      this.frameRequest = null;
    }

    dropHiddenVideo() {
      if (!this.hiddenVideo) return;
      this.hiddenVideo.pause();
      this.hiddenVideo.srcObject = null;
      this.hiddenVideo = null;
    }

    /** The median round trip (ms, one decimal) of the frames shown in the last interval. */
    summary() {
      const since = performance.timeOrigin + performance.now() - LATENCY_INTERVAL_MS;
      const recent = this.samples.filter((sample) => sample.shownAt >= since).map((sample) => sample.ms);
      return {
        round_trip_ms: recent.length > 0 ? Math.round(median(recent) * 10) / 10 : null,
        frames: recent.length,
      };
    }

    close() {
      this.port.close();
      this.unfollow();
      this.dropHiddenVideo();
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(signal.reason);
      }, { once: true });
    });
  }

  function waitForIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === 'complete') done();
      };
      // Gathering that never completes still leaves usable host candidates: go on with them.
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  function waitForFirstFrame(track, signal) {
    return new Promise((resolve, reject) => {
      const video = document.createElement('video');
      video.muted = true;
      video.playsInline = true;
      const cleanUp = () => {
        video.removeEventListener('loadeddata', onData);
        video.pause();
        video.srcObject = null;
      };
      const onData = () => {
        cleanUp();
        resolve({ width: video.videoWidth, height: video.videoHeight });
      };
      signal.addEventListener('abort', () => {
        cleanUp();
        reject(signal.reason);
      }, { once: true });
      video.addEventListener('loadeddata', onData);
      video.srcObject = new MediaStream([track]);
      video.play().catch(() => {});
    });
  }

  /** Posts the offer `sdp`; resolves with the answer. */
  async function postOffer(sdp, signal) {
    let response;
    try {
      response = await fetch(offerUrl(), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authHeaders() },
        body: JSON.stringify({ sdp, type: 'offer', client: clientId }),
        signal,
      });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new ConnectError('unreachable', `cannot reach ${offerUrl()}: ${error.message}`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const code = body?.error?.code ?? null;
      const message = body?.error?.message ?? response.statusText;
      const retryAfter = Number(response.headers.get('Retry-After'));
      throw new ConnectError('http_error', `${response.status} ${code ?? ''} ${message}`.replace(/\s+/g, ' '), {
        status: response.status,
        code,
        retryable: response.status === 503 || response.status === 429,
        retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : null,
      });
    }
    if (!body || body.type !== 'answer' || typeof body.sdp !== 'string') {
      throw new ConnectError('bad_answer', 'the server did not answer with an SDP answer');
    }
    return body;
  }

  /**
   * What identifies an ICE candidate, from its attribute with or without `a=`: foundation,
   * component, transport, priority, address, port and type (not the extensions Chromium appends).
   */
  function candidateKey(attribute) {
    return attribute.replace(/^a=/, '').split(' ').slice(0, 8).join(' ');
  }

  /**
   * Trickle ICE for one connection (see the top of this file): collects the candidates gathered
   * after the offer went out and, once the answer is applied, posts them to `<endpoint>/candidates`
   * in few requests, one at a time, at most MAX_TRICKLED_CANDIDATES in all. Never rejects and never
   * touches the connection: a failure is logged once; 404 and 405 (a server without trickle) and
   * 410 (the connection is no longer the pod's) end it.
   */
  class CandidateTrickle {
    /** Listens to `pc`'s candidates from now on: make it before setLocalDescription. */
    constructor(pc, signal) {
      this.url = endpointUrl('candidates');
      this.headers = { 'Content-Type': 'application/json', ...authHeaders() };
      this.abort = new AbortController();
      this.signal = AbortSignal.any([signal, this.abort.signal]);
      /** Gathered UDP candidates (`toJSON()`) not in the offer and not posted yet, oldest first. */
      this.queue = [];
      /** The offer's candidates (`candidateKey`) and ICE username fragment, once it went out. */
      this.offered = null;
      this.ufrag = null;
      /** The media section whose transport the answer bundles everything on (null: no bundle). */
      this.bundledMid = null;
      this.answered = false;
      this.sent = 0;
      this.timer = null;
      this.posting = false;
      this.warned = false;
      pc.addEventListener('icecandidate', ({ candidate }) => this.gathered(candidate));
    }

    gathered(candidate) {
      // Null and an empty candidate mark the end of gathering: the pod needs no such signal.
      if (!candidate?.candidate || this.abort.signal.aborted) return;
      const json = candidate.toJSON();
      const [, , transport = '', , address = ''] = json.candidate.split(' ');
      if (transport.toLowerCase() !== 'udp' || address.endsWith('.local') || this.offered?.has(candidateKey(json.candidate))) {
        return;
      }
      this.queue.push(json);
      this.schedule();
    }

    /** The offer `sdp` goes out now: the candidates it carries need no trickling. */
    offerSent(sdp) {
      const lines = sdp.split(/\r?\n/);
      this.offered = new Set(lines.filter((line) => line.startsWith('a=candidate:')).map(candidateKey));
      this.ufrag = lines.find((line) => line.startsWith('a=ice-ufrag:'))?.slice('a=ice-ufrag:'.length) ?? null;
      this.queue = this.queue.filter((candidate) => !this.offered.has(candidateKey(candidate.candidate)));
    }

    /** The answer `sdp` is applied: the pod takes candidates from now on. */
    answerApplied(sdp) {
      this.bundledMid = /^a=group:BUNDLE (\S+)/m.exec(sdp)?.[1] ?? null;
      this.answered = true;
      this.schedule();
    }

    schedule() {
      if (!this.answered || this.timer !== null || this.posting || this.queue.length === 0) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.postQueued();
      }, TRICKLE_COALESCE_MS);
    }

    async postQueued() {
      const candidates = this.queue.splice(0)
        .filter((candidate) => this.bundledMid === null || candidate.sdpMid === null || candidate.sdpMid === this.bundledMid)
        .slice(0, MAX_TRICKLED_CANDIDATES - this.sent);
      if (candidates.length === 0 || this.ufrag === null || this.signal.aborted) return;
      this.sent += candidates.length;
      this.posting = true;
      try {
        const response = await fetch(this.url, {
          method: 'POST',
          headers: this.headers,
          body: JSON.stringify({ ufrag: this.ufrag, candidates }),
          signal: this.signal,
        });
        if (!response.ok) {
          const code = (await response.json().catch(() => null))?.error?.code ?? '';
          const final = [404, 405, 410].includes(response.status);
          this.warnOnce(`${final ? 'not trickling ICE candidates' : 'trickled ICE candidates not taken'}: ${response.status} ${code}`.trim());
          if (final) this.stop();
        }
      } catch (error) {
        if (!this.signal.aborted) this.warnOnce(`trickled ICE candidates not sent: ${error?.message ?? error}`);
      } finally {
        this.posting = false;
      }
      if (this.sent >= MAX_TRICKLED_CANDIDATES) this.stop();
      this.schedule();
    }

    warnOnce(message) {
      if (this.warned) return;
      this.warned = true;
      console.warn(LOG_PREFIX, message);
    }

    /** Posts nothing more (the connection closed, or the server takes no candidates). */
    stop() {
      clearTimeout(this.timer);
      this.timer = null;
      this.queue = [];
      this.abort.abort();
    }
  }

  function preferCodec(transceiver, codec) {
    if (!codec || !transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) {
      return;
    }
    const wanted = `video/${codec}`.toLowerCase();
    const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
    const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
    if (preferred.length === 0) {
      console.warn(LOG_PREFIX, `codec ${codec} is not available; using the browser's default order`);
      return;
    }
    transceiver.setCodecPreferences([...preferred, ...codecs.filter((c) => !preferred.includes(c))]);
  }

  /** Tracks handed to the page that carry the filtered video (for isFiltered). */
  const filteredTracks = new WeakSet();
  let activeSession = null;

  /**
   * One wrapped getUserMedia result: the camera, the stream handed to the page, and the peer
   * connection (replaced on reconnect) that turns the camera into the filtered track.
   */
  class Session {
    /** `stamper`: the frame stamper's worker, once it runs (null: no round-trip latency). */
    constructor(cameraStream, stamper) {
      this.cameraStream = cameraStream;
      this.cameraTrack = cameraStream.getVideoTracks()[0];
      this.audioTracks = cameraStream.getAudioTracks();
      this.output = null;
      this.shownTrack = null;
      this.pc = null;
      this.channel = null;
      this.state = 'connecting';
      this.stopped = false;
      this.reconnecting = false;
      this.abort = new AbortController();
      this.pendingFilterReplies = [];
      this.lastRttMs = null;
      this.path = null;
      this.reportedPath = null;
      this.timers = new Set();
      this.stamper = stamper;
      this.roundTrip = null;
      this.podLatencyMs = null;
      this.latency = null;
      this.trickle = null;
    }

    /** First connection. Resolves with the stream for the page; never rejects. */
    async start() {
      emit('connecting', { endpoint: offerUrl(), clientId });
      try {
        const remote = await this.connect();
        this.output = new MediaStream([remote, ...this.audioTracks]);
        this.handOut(remote, { filtered: true });
        this.setState('connected');
        emit('connected', { stream: this.output, track: remote, peerConnection: this.pc });
        return this.output;
      } catch (error) {
        if (this.stopped) {
          return this.cameraStream;
        }
        if (error instanceof ConnectError && error.retryable) {
          // The GPU pod is not ready yet: show the raw camera and switch when it is.
          this.output = new MediaStream([...this.audioTracks]);
          this.reconnect(error);
          return this.output;
        }
        return this.fallBack(error);
      }
    }

    fallBack(error) {
      const detail = error instanceof ConnectError
        ? error.detail
        : { reason: error?.name === 'TimeoutError' ? 'timeout' : 'error', message: String(error?.message ?? error) };
      console.warn(LOG_PREFIX, `using the camera without the filter: ${detail.message}`);
      this.closeConnection();
      this.abort.abort();
      endFrameStamper(this.stamper);
      this.setState('fallback');
      if (activeSession === this) activeSession = null;
      emit('fallback', { ...detail, stream: this.cameraStream });
      return this.cameraStream;
    }

    /** Makes a new peer connection and returns its remote video track once it shows a frame. */
    async connect() {
      const timeout = AbortSignal.timeout(config.connectTimeoutMs);
      const signal = AbortSignal.any([timeout, this.abort.signal]);
      let pc = null;
      let trickle = null;
      try {
        const [routerServers, stamper] = await Promise.all([fetchIceServers(signal), this.stamper]);
        pc = new RTCPeerConnection({ iceServers: [...config.iceServers, ...routerServers] });
        this.pc = pc;
        const transceiver = pc.addTransceiver(this.cameraTrack, {
          direction: 'sendrecv',
          streams: [new MediaStream([this.cameraTrack])],
        });
        this.roundTrip = stamper && RoundTripMeter.install(stamper, transceiver.sender);
        preferCodec(transceiver, config.codec);
        const remoteTrack = new Promise((resolve) => {
          pc.addEventListener('track', (event) => {
            if (event.track.kind === 'video') resolve(event.track);
          });
        });
        this.openChannel(pc);
        if (config.trickle) {
          trickle = new CandidateTrickle(pc, this.abort.signal);
          this.trickle = trickle;
        }
        await pc.setLocalDescription(await pc.createOffer());
        await waitForIceGathering(pc, trickle
          ? Math.min(config.trickleAfterMs, config.iceGatheringTimeoutMs)
          : config.iceGatheringTimeoutMs);
        const offer = pc.localDescription.sdp;
        trickle?.offerSent(offer);
        const answer = await postOffer(offer, signal);
        await pc.setRemoteDescription(answer);
        trickle?.answerApplied(answer.sdp);
        const track = await Promise.race([
          remoteTrack,
          new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true })),
        ]);
        await waitForFirstFrame(track, signal);
        this.watch(pc, track);
        this.refreshPath();
        this.reportLatency(track);
        return track;
      } catch (error) {
        trickle?.stop();
        if (pc && this.pc === pc) this.closeConnection();
        else pc?.close();
        if (timeout.aborted && !(error instanceof ConnectError)) {
          throw new ConnectError('timeout', `no filtered video within ${config.connectTimeoutMs} ms`, { retryable: false });
        }
        throw error;
      }
    }

    openChannel(pc) {
      const channel = pc.createDataChannel(DATA_CHANNEL_LABEL);
      this.channel = channel;
      channel.addEventListener('open', () => {
        if (config.filter) {
          this.sendFilter(config.filter).catch((error) => console.warn(LOG_PREFIX, 'filter not applied:', error.message));
        }
        const timer = setInterval(() => {
          if (channel.readyState === 'open') channel.send(`ping${performance.now()}`);
        }, config.pingIntervalMs);
        this.timers.add(timer);
        channel.addEventListener('close', () => {
          clearInterval(timer);
          this.timers.delete(timer);
        });
      });
      channel.addEventListener('message', (event) => this.onChannelMessage(event.data));
    }

    onChannelMessage(data) {
      if (typeof data !== 'string') {
        return;
      }
      if (data.startsWith('pong')) {
        const sent = Number(data.slice(4));
        if (Number.isFinite(sent)) this.lastRttMs = Math.round((performance.now() - sent) * 10) / 10;
        return;
      }
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return;
      }
      if (message?.type === 'stats') {
        this.podLatencyMs = typeof message.pod_latency_ms === 'number' ? message.pod_latency_ms : null;
        this.refreshPath().then(() => emit('stats', { ...message, rtt_ms: this.lastRttMs, path: this.path }));
      } else if (message?.type === 'filter') {
        this.pendingFilterReplies.shift()?.(message);
        emit('filter', message);
      }
    }

    /** Reads the selected candidate pair of the current connection into `path`. Never rejects. */
    async refreshPath() {
      const pc = this.pc;
      if (!pc) {
        return;
      }
      try {
        const path = await selectedPath(pc);
        if (this.pc !== pc) return;
        this.path = path;
        this.reportPath(path);
      } catch {
        // The connection closed meanwhile: its path no longer matters.
      }
    }

    /**
     * Tells the pod the path once it is known and whenever it changes: the pod sees its own side of
     * the candidate pair, not how this browser reaches its TURN server (udp, tcp or tls), which it
     * shows in its status and metrics.
     */
    reportPath(path) {
      const report = path && JSON.stringify({ type: 'path', ...path });
      if (!report || report === this.reportedPath || this.channel?.readyState !== 'open') {
        return;
      }
      this.channel.send(report);
      this.reportedPath = report;
    }

    /** Measures the filtered `track`'s frames and reports the latency once an interval. */
    reportLatency(track) {
      this.roundTrip?.watch(track);
      const timer = setInterval(() => {
        this.roundTrip?.followShownVideo();
        const roundTrip = this.roundTrip?.summary() ?? { round_trip_ms: null, frames: 0 };
        this.latency = { round_trip_ms: roundTrip.round_trip_ms, pod_ms: this.podLatencyMs, frames: roundTrip.frames };
        emit('latency', { ...this.latency });
      }, LATENCY_INTERVAL_MS);
      this.timers.add(timer);
    }

    sendFilter(spec) {
      const channel = this.channel;
      if (!channel || channel.readyState !== 'open') {
        return Promise.resolve(null);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const index = this.pendingFilterReplies.indexOf(onReply);
          if (index >= 0) this.pendingFilterReplies.splice(index, 1);
          reject(new Error(`no reply to the filter change within ${config.filterReplyTimeoutMs} ms`));
        }, config.filterReplyTimeoutMs);
        const onReply = (reply) => {
          clearTimeout(timer);
          resolve(reply);
        };
        this.pendingFilterReplies.push(onReply);
        channel.send(JSON.stringify(spec));
      });
    }

    /** Watches an established connection; a failure shows the raw camera and reconnects. */
    watch(pc, track) {
      let graceTimer = null;
      const fail = (reason) => {
        if (this.pc === pc && !this.stopped) this.reconnect(new ConnectError('connection_lost', reason));
      };
      pc.addEventListener('connectionstatechange', () => {
        clearTimeout(graceTimer);
        if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
          fail(`peer connection ${pc.connectionState}`);
        } else if (pc.connectionState === 'disconnected') {
          graceTimer = setTimeout(() => fail('peer connection disconnected'), config.disconnectedGraceMs);
        }
      });
      this.channel?.addEventListener('close', () => fail('data channel closed'));
      track.addEventListener('ended', () => fail('remote track ended'));
    }

    async reconnect(cause) {
      if (this.reconnecting || this.stopped) {
        return;
      }
      this.reconnecting = true;
      this.closeConnection();
      this.showRaw();
      this.setState('reconnecting');
      console.warn(LOG_PREFIX, `showing the raw camera while reconnecting: ${cause.message}`);
      let lastError = cause;
      for (let attempt = 1; !this.stopped; attempt += 1) {
        const backoff = Math.min(config.reconnectMaxDelayMs, config.reconnectMinDelayMs * 2 ** (attempt - 1));
        const delayMs = Math.min(config.reconnectMaxDelayMs, Math.max(backoff, lastError.retryAfterMs ?? 0));
        if (lastError.status === 503 && config.session) {
          const status = await fetchSessionStatus(this.abort.signal);
          emit('waiting', { phase: status?.phase ?? null, reason: status?.reason ?? null, retryInMs: delayMs });
        }
        emit('reconnecting', { attempt, delayMs, ...(lastError.detail ?? { message: String(lastError) }) });
        try {
          await sleep(delayMs, this.abort.signal);
          const remote = await this.connect();
          this.reconnecting = false;
          this.show(remote, { filtered: true });
          this.setState('connected');
          emit('connected', { stream: this.output, track: remote, peerConnection: this.pc, attempt });
          return;
        } catch (error) {
          if (this.stopped) break;
          lastError = error instanceof ConnectError ? error : new ConnectError('error', String(error?.message ?? error));
        }
      }
      this.reconnecting = false;
    }

    /** Puts `track` in the page's stream as its only video track. */
    show(track, { filtered }) {
      const previous = this.shownTrack;
      if (previous === track) {
        return;
      }
      this.handOut(track, { filtered });
      this.output.addTrack(track);
      if (previous) {
        this.output.removeTrack(previous);
        if (!filteredTracks.has(previous)) stopNative(previous);
      }
    }

    showRaw() {
      this.show(this.cameraTrack.clone(), { filtered: false });
    }

    /** Marks a track the page receives: stopping it stops the whole camera session. */
    handOut(track, { filtered }) {
      this.shownTrack = track;
      if (filtered) filteredTracks.add(track);
      track.stop = () => {
        stopNative(track);
        this.stop();
      };
    }

    setState(state) {
      this.state = state;
    }

    closeConnection() {
      for (const timer of this.timers) clearInterval(timer);
      this.timers.clear();
      for (const reply of this.pendingFilterReplies.splice(0)) reply({ type: 'filter', ok: false, error: 'connection closed' });
      const pc = this.pc;
      this.pc = null;
      this.channel = null;
      this.path = null;
      this.reportedPath = null;
      this.trickle?.stop();
      this.trickle = null;
      this.roundTrip?.close();
      this.roundTrip = null;
      this.podLatencyMs = null;
      this.latency = null;
      if (pc && pc.connectionState !== 'closed') pc.close();
    }

    stop() {
      if (this.stopped) {
        return;
      }
      this.stopped = true;
      this.abort.abort();
      this.closeConnection();
      endFrameStamper(this.stamper);
      stopNative(this.cameraTrack);
      if (this.shownTrack) stopNative(this.shownTrack);
      this.setState('stopped');
      if (activeSession === this) activeSession = null;
      emit('stopped', {});
    }
  }

  function stopNative(track) {
    MediaStreamTrack.prototype.stop.call(track);
  }

  const originalGetUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);

  async function getUserMedia(constraints) {
    // The stamper's worker starts while the camera opens, so that no connection waits for it.
    const stamper = config.enabled && config.measureLatency && constraints?.video
      ? startFrameStamper()
      : Promise.resolve(null);
    let cameraStream;
    try {
      cameraStream = await originalGetUserMedia(constraints);
    } catch (error) {
      endFrameStamper(stamper);
      throw error;
    }
    if (!config.enabled || !constraints || !constraints.video || cameraStream.getVideoTracks().length === 0) {
      endFrameStamper(stamper);
      return cameraStream;
    }
    // One camera, one connection: a new request replaces the previous session.
    activeSession?.stop();
    const session = new Session(cameraStream, stamper);
    activeSession = session;
    return session.start();
  }

  navigator.mediaDevices.getUserMedia = getUserMedia;

  readScriptAttributes();

  window.P2PCamera = Object.freeze({
    /**
     * Changes any of: endpoint, session, token, filter, enabled, codec, iceServers, timeouts,
     * measureLatency (false: no encoded transform, no round-trip latency; from the next
     * getUserMedia call), trickle and trickleAfterMs (trickle ICE, see the top of this file; from
     * the next connection).
     */
    configure(options = {}) {
      for (const [key, value] of Object.entries(options)) {
        if (!(key in config)) {
          console.warn(LOG_PREFIX, `unknown option ${key}`);
        } else if (key === 'filter') {
          config.filter = parseFilterSpec(value);
        } else {
          config[key] = value;
        }
      }
      return { ...config };
    },
    /**
     * Switches the filter (`"style:3"` or `{filter: "style", style: 3}`), now if connected and
     * on every later connection. Resolves with the server's reply, or null when not connected.
     */
    setFilter(spec) {
      try {
        config.filter = parseFilterSpec(spec);
      } catch (error) {
        return Promise.reject(error);
      }
      return activeSession ? activeSession.sendFilter(config.filter) : Promise.resolve(null);
    },
    /** Stops the camera and closes the connection of the current session. */
    stop() {
      activeSession?.stop();
    },
    /** True for a track this script returned that carries the filtered (remote) video. */
    isFiltered(track) {
      return filteredTracks.has(track);
    },
    get state() {
      return activeSession ? activeSession.state : 'idle';
    },
    /**
     * How the current connection reaches the server: `{local, remote, protocol}`, e.g.
     * `{local: 'relay', remote: 'host', protocol: 'tcp'}` through a TURN relay over TCP; null
     * while not connected.
     */
    get path() {
      return activeSession ? activeSession.path : null;
    },
    /**
     * The latency of the current connection, updated once a second: `{round_trip_ms, pod_ms,
     * frames}` (see the top of this file); null while not connected.
     */
    get latency() {
      return activeSession?.latency ? { ...activeSession.latency } : null;
    },
    /** The raw camera video of the current session (for a side-by-side view). */
    get cameraStream() {
      return activeSession ? new MediaStream([activeSession.cameraTrack]) : null;
    },
    get peerConnection() {
      return activeSession ? activeSession.pc : null;
    },
    get config() {
      return { ...config };
    },
    clientId,
    originalGetUserMedia,
  });
})();
