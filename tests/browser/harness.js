// Real parts for the browser end-to-end tests: a signaling server process (camera-pod or the aiortc
// baseline) on a free 127.0.0.1 port, headless Debian Chromium with a fake camera that plays a
// picture the test knows, and pixel measurements taken through a canvas inside the page.

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const staticDir = path.join(repoRoot, 'static');
export const artifactsDir = path.join(repoRoot, 'artifacts');

const cacheDir = process.env.P2PCAMERA_CACHE ?? path.join(os.homedir(), '.cache', 'p2pcamera');
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(cacheDir, 'target');
export const cameraPodBin = process.env.P2PCAMERA_CAMERA_POD_BIN ?? path.join(targetDir, 'debug', 'camera-pod');
export const venvPython = process.env.P2PCAMERA_PYTHON ?? path.join(cacheDir, 'venv', 'bin', 'python');
const chromiumBin = process.env.P2PCAMERA_CHROMIUM ?? '/usr/bin/chromium';
const onnxRuntime = path.join(cacheDir, 'onnxruntime-1.32.0', 'libonnxruntime.so.1.32.0');

/** Server environment: the ONNX Runtime library from the cache unless one is given. */
function serverEnv() {
  const env = { ...process.env };
  if (!env.ORT_DYLIB_PATH && fs.existsSync(onnxRuntime)) env.ORT_DYLIB_PATH = onnxRuntime;
  return env;
}

const handedOutPorts = new Set();

/** The first port of the kernel's ephemeral range. */
function ephemeralStart() {
  try {
    const first = Number.parseInt(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0], 10);
    return Number.isInteger(first) ? first : 32768;
  } catch {
    return 32768;
  }
}

function isFreeTcp(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A TCP port on 127.0.0.1 that is free, drawn from below the kernel's ephemeral range and not
 * handed out before by this process. A port from listen(0) comes from the ephemeral range, where
 * any outgoing connection (Chromium opens many) can take it before the server it is meant for
 * binds it; below that range only listeners take ports.
 */
export async function freePort() {
  const end = ephemeralStart();
  const start = end >= 16384 + 4096 ? 16384 : Math.max(1024, end - 4096);
  for (let draw = 0; draw < 200; draw += 1) {
    const port = start + Math.floor(Math.random() * Math.max(1, end - start));
    if (!handedOutPorts.has(port) && (await isFreeTcp(port))) {
      handedOutPorts.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port in ${start}..${end}`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The commands that start each kind of server on 127.0.0.1:port; camera-pod starts with `filter`
 * (the baseline only has passthrough).
 */
export const serverKinds = {
  'camera-pod': (port, filter) => {
    if (!fs.existsSync(cameraPodBin)) {
      throw new Error(`camera-pod binary not found at ${cameraPodBin}: build it with ` +
        '`cargo build --workspace --all-targets` or set P2PCAMERA_CAMERA_POD_BIN');
    }
    return [cameraPodBin, ['--listen', `127.0.0.1:${port}`, '--filter', filter, '--plain-http']];
  },
  baseline: (port) => [venvPython, [path.join(repoRoot, 'tests', 'baseline', 'server.py'), '--listen', `127.0.0.1:${port}`]],
};

/**
 * A server process we started, known by its PID. `stop()` sends SIGTERM, then SIGKILL after a
 * grace period; it is safe to call twice.
 */
export class ServerProcess {
  constructor(kind, port, { extraArgs, filter }) {
    this.kind = kind;
    this.port = port;
    this.extraArgs = extraArgs;
    this.filter = filter;
    this.url = `http://127.0.0.1:${port}`;
    this.output = '';
    this.child = null;
  }

  static async start(kind, { extraArgs = [], filter = 'passthrough' } = {}) {
    const server = new ServerProcess(kind, await freePort(), { extraArgs, filter });
    await server.spawn();
    return server;
  }

  async spawn() {
    const [command, args] = serverKinds[this.kind](this.port, this.filter);
    const child = spawn(command, [...args, ...this.extraArgs], { cwd: repoRoot, env: serverEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = once(child, 'exit');
    const keep = (chunk) => {
      this.output = (this.output + chunk.toString()).slice(-20000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${this.kind} exited during start-up (${child.exitCode ?? child.signalCode}):\n${this.output}`);
      }
      try {
        const response = await fetch(`${this.url}/`);
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      await sleep(100);
    }
    await this.stop();
    throw new Error(`${this.kind} did not serve ${this.url}/ within 30 s:\n${this.output}`);
  }

  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, 'SIGTERM');
    const killed = await Promise.race([this.exited.then(() => true), sleep(5000).then(() => false)]);
    if (!killed) {
      process.kill(child.pid, 'SIGKILL');
      await this.exited;
    }
  }
}

// Colours of the four quadrants of the fake camera's picture, and the rows of its bottom band,
// where a white bar moves so that every frame differs.
export const QUADRANTS = {
  topLeft: [200, 40, 40],
  topRight: [40, 40, 200],
  bottomLeft: [128, 128, 128],
  bottomRight: [200, 40, 200],
};
const WIDTH = 640;
const HEIGHT = 480;
const BAND = 48;

function yuv([r, g, b]) {
  const y = 0.299 * r + 0.587 * g + 0.114 * b;
  const u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b;
  const v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b;
  return [y, u, v].map((c) => Math.max(0, Math.min(255, Math.round(c))));
}

function pixelColour(x, y, frame, frames) {
  if (y >= HEIGHT - BAND) {
    const barX = Math.floor((frame / frames) * WIDTH);
    return x >= barX && x < barX + 40 ? [255, 255, 255] : [20, 20, 20];
  }
  const top = y < (HEIGHT - BAND) / 2;
  const left = x < WIDTH / 2;
  if (top) return left ? QUADRANTS.topLeft : QUADRANTS.topRight;
  return left ? QUADRANTS.bottomLeft : QUADRANTS.bottomRight;
}

/**
 * Writes a video (Y4M, 4:2:0, 30 fps) for the fake camera, which Chromium loops: `frames`
 * pictures whose pixels `colourAt(x, y, frame)` gives as [r, g, b].
 */
function writeY4m(file, frames, colourAt) {
  const header = Buffer.from(`YUV4MPEG2 W${WIDTH} H${HEIGHT} F30:1 Ip A1:1 C420jpeg\n`);
  const frameSize = WIDTH * HEIGHT * 3 / 2;
  const out = fs.openSync(file, 'w');
  try {
    fs.writeSync(out, header);
    for (let frame = 0; frame < frames; frame += 1) {
      const data = Buffer.alloc(frameSize);
      const uOffset = WIDTH * HEIGHT;
      const vOffset = uOffset + (WIDTH / 2) * (HEIGHT / 2);
      for (let y = 0; y < HEIGHT; y += 1) {
        for (let x = 0; x < WIDTH; x += 1) {
          const [Y, U, V] = yuv(colourAt(x, y, frame));
          data[y * WIDTH + x] = Y;
          if (x % 2 === 0 && y % 2 === 0) {
            const i = (y / 2) * (WIDTH / 2) + x / 2;
            data[uOffset + i] = U;
            data[vOffset + i] = V;
          }
        }
      }
      fs.writeSync(out, Buffer.from('FRAME\n'));
      fs.writeSync(out, data);
    }
  } finally {
    fs.closeSync(out);
  }
}

/** Writes the fake camera's video: four coloured quadrants over a band with a moving bar. */
export function writeCameraVideo(file, frames = 30) {
  writeY4m(file, frames, (x, y, frame) => pixelColour(x, y, frame, frames));
}

/**
 * Where the indexed camera video writes each picture's frame index: across the top `height` of
 * its 480 rows, `bits` bits (most significant first), each as a pair of cells side by side (2 *
 * bits cells over the width), bright then dark for a 1, dark then bright for a 0. A bit is read
 * by comparing its two cells only, which survives codec error.
 */
export const FRAME_INDEX_STRIP = Object.freeze({ bits: 7, height: 96, bright: 230, dark: 25 });

/**
 * Writes the fake camera's video with its frame index (0 to frames - 1, at most 2^bits) in a
 * strip across the top (FRAME_INDEX_STRIP) above the usual picture.
 */
export function writeIndexedCameraVideo(file, frames) {
  const { bits, height, bright, dark } = FRAME_INDEX_STRIP;
  if (frames > 2 ** bits) throw new Error(`${frames} frames do not fit ${bits} index bits`);
  const cellWidth = WIDTH / (2 * bits);
  writeY4m(file, frames, (x, y, frame) => {
    if (y >= height) return pixelColour(x, y, frame, frames);
    const cell = Math.floor(x / cellWidth);
    const one = (frame >> (bits - 1 - Math.floor(cell / 2))) & 1;
    const level = (cell % 2 === 0) === (one === 1) ? bright : dark;
    return [level, level, level];
  });
}

/** Headless Chromium with a fake camera playing `cameraVideo`, WebRTC allowed on loopback. */
export async function launchBrowser(cameraVideo) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'p2pcamera-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumBin,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${cameraVideo}`,
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Keeps only ICE candidates on 127.0.0.1, so that no media goes to any other address. */
export function loopbackCandidatesOnly(sdp) {
  return sdp.split(/\r?\n/)
    .filter((line) => !line.startsWith('a=candidate:') || line.split(' ')[4] === '127.0.0.1')
    .join('\r\n');
}

/**
 * Routes the page's offers and trickled candidates through the test so that the offer, the answer
 * and the trickled candidates carry only loopback candidates (this machine has other interfaces
 * that Chromium would also offer). A trickle request left with none is answered 204 here.
 */
export async function restrictIceToLoopback(context) {
  await context.route('**/candidates', async (route) => {
    const body = JSON.parse(route.request().postData());
    body.candidates = body.candidates.filter(({ candidate }) => candidate.split(' ')[4] === '127.0.0.1');
    if (body.candidates.length === 0) {
      await route.fulfill({ status: 204 });
      return;
    }
    try {
      await route.fulfill({ response: await route.fetch({ postData: JSON.stringify(body) }) });
    } catch {
      await route.abort('connectionrefused');
    }
  });
  await context.route('**/offer', async (route) => {
    const request = route.request();
    const offer = JSON.parse(request.postData());
    offer.sdp = loopbackCandidatesOnly(offer.sdp);
    let response;
    try {
      response = await route.fetch({ postData: JSON.stringify(offer) });
    } catch {
      await route.abort('connectionrefused');
      return;
    }
    const body = await response.json();
    if (typeof body.sdp === 'string') body.sdp = loopbackCandidatesOnly(body.sdp);
    await route.fulfill({ response, json: body });
  });
}

/**
 * A UDP relay on 127.0.0.1 between the browser and camera-pod's media port that holds every
 * datagram `delayMs` milliseconds in each direction: a network path whose round trip the test
 * knows. `routeOffersThrough` sends a context's connections through it.
 */
export class DelayingRelay {
  constructor(delayMs) {
    this.delayMs = delayMs;
    this.serverPort = null;
    this.client = null;
    this.browserSide = dgram.createSocket('udp4');
    this.serverSide = dgram.createSocket('udp4');
  }

  /** A relay bound to two ports of its own (the kernel picks them, so no other socket has them). */
  static async start(delayMs) {
    const relay = new DelayingRelay(delayMs);
    await Promise.all([relay.browserSide, relay.serverSide].map((socket) => new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', resolve);
    })));
    relay.browserSide.on('message', (data, from) => {
      relay.client = from;
      if (relay.serverPort !== null) relay.later(() => relay.serverSide.send(data, relay.serverPort, '127.0.0.1'));
    });
    relay.serverSide.on('message', (data, from) => {
      const client = relay.client;
      if (from.port !== relay.serverPort || client === null) return;
      relay.later(() => relay.browserSide.send(data, client.port, client.address));
    });
    return relay;
  }

  get port() {
    return this.browserSide.address().port;
  }

  later(send) {
    setTimeout(() => {
      try {
        send();
      } catch {
        // Closed meanwhile.
      }
    }, this.delayMs);
  }

  close() {
    this.browserSide.close();
    this.serverSide.close();
  }
}

/**
 * A TCP proxy on 127.0.0.1 that holds every chunk `delayMs` milliseconds in each direction: a
 * server (a TURN server over TCP or TLS) that sits a `2 * delayMs` round trip away.
 */
export class DelayingTcpProxy {
  constructor(delayMs, target) {
    this.delayMs = delayMs;
    this.target = target;
    this.sockets = new Set();
    this.server = net.createServer((client) => this.forward(client));
  }

  /** A proxy to `target` (`{host, port}`) on a port the kernel picks. */
  static async start(delayMs, target) {
    const proxy = new DelayingTcpProxy(delayMs, target);
    proxy.server.listen(0, '127.0.0.1');
    await once(proxy.server, 'listening');
    return proxy;
  }

  get port() {
    return this.server.address().port;
  }

  forward(client) {
    const upstream = net.connect(this.target.port, this.target.host);
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      this.sockets.add(from);
      // Equal delays keep the order: timers of one delay fire in the order they were set.
      from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), this.delayMs));
      from.on('end', () => setTimeout(() => to.destroyed || to.end(), this.delayMs));
      from.on('error', () => to.destroy());
      from.on('close', () => this.sockets.delete(from));
    }
  }

  close() {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
  }
}

/**
 * A STUN server on 127.0.0.1 that answers every Binding request `delayMs` late, mapping the
 * browser to `mappedAddress` (its own port kept): a server-reflexive candidate that Chromium
 * gathers well after its host candidates, as it does a TURN relay's. The address is another
 * loopback one, so that Chromium keeps it (it drops a reflexive address equal to its host address).
 */
export class SlowStunServer {
  constructor(delayMs, mappedAddress) {
    this.delayMs = delayMs;
    this.mappedAddress = mappedAddress;
    this.socket = dgram.createSocket('udp4');
    this.timers = new Set();
    /** Binding requests answered. */
    this.answered = 0;
  }

  static async start(delayMs, mappedAddress = '127.0.0.2') {
    const server = new SlowStunServer(delayMs, mappedAddress);
    await new Promise((resolve, reject) => {
      server.socket.once('error', reject);
      server.socket.bind(0, '127.0.0.1', resolve);
    });
    server.socket.on('message', (request, from) => server.answerLater(request, from));
    return server;
  }

  get url() {
    return `stun:127.0.0.1:${this.socket.address().port}`;
  }

  /** A Binding success response (RFC 8489) with XOR-MAPPED-ADDRESS, `delayMs` from now. */
  answerLater(request, from) {
    const MAGIC_COOKIE = 0x2112a442;
    if (request.length < 20 || request.readUInt16BE(0) !== 0x0001 || request.readUInt32BE(4) !== MAGIC_COOKIE) return;
    const response = Buffer.alloc(32);
    response.writeUInt16BE(0x0101, 0);
    response.writeUInt16BE(12, 2);
    request.copy(response, 4, 4, 20);
    response.writeUInt16BE(0x0020, 20);
    response.writeUInt16BE(8, 22);
    response.writeUInt16BE(0x0001, 24);
    response.writeUInt16BE(from.port ^ (MAGIC_COOKIE >>> 16), 26);
    const address = this.mappedAddress.split('.').reduce((value, octet) => (value << 8) + Number(octet), 0);
    response.writeUInt32BE(((address ^ MAGIC_COOKIE) >>> 0), 28);
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.socket.send(response, from.port, from.address);
      this.answered += 1;
    }, this.delayMs);
    this.timers.add(timer);
  }

  close() {
    for (const timer of this.timers) clearTimeout(timer);
    this.socket.close();
  }
}

/**
 * Sends the media of a context's offers through `relay`: the offer goes without candidates and
 * trickled ones stop here (answered 204), so the server learns the browser's address from the
 * relay's connectivity checks only; the answer keeps one candidate, its 127.0.0.1 UDP host
 * candidate with the relay's port for the server's.
 */
export async function routeOffersThrough(context, relay) {
  await context.route('**/candidates', (route) => route.fulfill({ status: 204 }));
  const hostCandidate = /^(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$/i;
  await context.route('**/offer', async (route) => {
    const offer = JSON.parse(route.request().postData());
    offer.sdp = offer.sdp.split(/\r?\n/).filter((line) => !line.startsWith('a=candidate:')).join('\r\n');
    const response = await route.fetch({ postData: JSON.stringify(offer) });
    const body = await response.json();
    if (typeof body.sdp === 'string') {
      const lines = body.sdp.split(/\r?\n/);
      const found = lines.map((line) => line.match(hostCandidate)).find(Boolean);
      if (!found) throw new Error(`the answer has no UDP host candidate on 127.0.0.1:\n${body.sdp}`);
      relay.serverPort = Number(found[2]);
      const relayed = `${found[1]}${relay.port}${found[3]}`;
      body.sdp = lines.map((line) => (line === found[0] ? relayed : line))
        .filter((line) => line === relayed || !line.startsWith('a=candidate:')).join('\r\n');
    }
    await route.fulfill({ response, json: body });
  });
}

/** Records every p2pcamera:* event and console warning of a page in `window.__p2pcameraEvents`. */
export async function recordEvents(page) {
  await page.addInitScript(() => {
    window.__p2pcameraEvents = [];
    for (const name of ['connecting', 'connected', 'fallback', 'waiting', 'reconnecting', 'stats', 'latency', 'filter', 'stopped']) {
      window.addEventListener(`p2pcamera:${name}`, (event) => {
        const { stream, track, peerConnection, ...detail } = event.detail ?? {};
        window.__p2pcameraEvents.push({ name, detail, at: performance.now() });
      });
    }
  });
  const warnings = [];
  page.on('console', (message) => {
    if (message.type() === 'warning') warnings.push(message.text());
  });
  return warnings;
}

export async function eventsNamed(page, name) {
  return page.evaluate((wanted) => window.__p2pcameraEvents.filter((e) => e.name === wanted), name);
}

export async function waitForEvent(page, name, timeout = 20000) {
  await page.waitForFunction((wanted) => window.__p2pcameraEvents.some((e) => e.name === wanted), name, { timeout });
  return (await eventsNamed(page, name)).at(-1).detail;
}

/**
 * Measures the picture a video element shows: mean colour of each quadrant's centre, the fraction
 * of strongly green pixels, and the mean absolute difference to another element's picture.
 */
export async function measureVideo(page, selector, referenceSelector = null) {
  return page.evaluate(([sel, refSel]) => {
    const W = 64;
    const H = 48;
    const pixels = (element) => {
      const canvas = document.createElement('canvas');
      canvas.width = W;
      canvas.height = H;
      const context = canvas.getContext('2d', { willReadFrequently: true });
      context.drawImage(element, 0, 0, W, H);
      return context.getImageData(0, 0, W, H).data;
    };
    const video = document.querySelector(sel);
    if (!video || video.readyState < 2 || video.videoWidth === 0) return null;
    const data = pixels(video);
    // The picture's bottom band (48 of 480 rows) holds a moving bar; compare only above it.
    const bandTop = Math.floor(H * (480 - 48) / 480);
    const mean = (x0, x1, y0, y1) => {
      const sum = [0, 0, 0];
      let n = 0;
      for (let y = y0; y < y1; y += 1) {
        for (let x = x0; x < x1; x += 1) {
          const i = (y * W + x) * 4;
          sum[0] += data[i]; sum[1] += data[i + 1]; sum[2] += data[i + 2];
          n += 1;
        }
      }
      return sum.map((s) => Math.round(s / n));
    };
    const midY = Math.floor(bandTop / 2);
    const result = {
      width: video.videoWidth,
      height: video.videoHeight,
      quadrants: {
        topLeft: mean(4, W / 2 - 4, 3, midY - 3),
        topRight: mean(W / 2 + 4, W - 4, 3, midY - 3),
        bottomLeft: mean(4, W / 2 - 4, midY + 3, bandTop - 3),
        bottomRight: mean(W / 2 + 4, W - 4, midY + 3, bandTop - 3),
      },
      greenFraction: 0,
      meanAbsDiff: null,
    };
    let green = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 1] > data[i] + 60 && data[i + 1] > data[i + 2] + 60) green += 1;
    }
    result.greenFraction = green / (W * H);
    const reference = refSel && document.querySelector(refSel);
    if (reference && reference.readyState >= 2) {
      const other = pixels(reference);
      let diff = 0;
      for (let i = 0; i < bandTop * W * 4; i += 4) {
        diff += Math.abs(data[i] - other[i]) + Math.abs(data[i + 1] - other[i + 1]) + Math.abs(data[i + 2] - other[i + 2]);
      }
      result.meanAbsDiff = diff / (bandTop * W * 3);
    }
    return result;
  }, [selector, referenceSelector]);
}

/**
 * Measures places of a video element's picture against a reference element's, both drawn at
 * `width` x `height`: for each place (`box`: `[x0, y0, x1, y1]` in those pixels), the mean RGB
 * colour in both and the fraction of pixels where a channel differs by more than 40.
 */
export async function measurePlaces(page, selector, referenceSelector, { width, height, places }) {
  const boxes = Object.fromEntries(Object.entries(places).map(([name, place]) => [name, place.box]));
  return page.evaluate(([sel, refSel, size, placeBoxes]) => {
    const video = document.querySelector(sel);
    const reference = document.querySelector(refSel);
    if (!video || !reference || video.readyState < 2 || reference.readyState < 2 || video.videoWidth === 0) return null;
    const pixels = (element) => {
      const canvas = document.createElement('canvas');
      canvas.width = size.width;
      canvas.height = size.height;
      const context = canvas.getContext('2d', { willReadFrequently: true });
      context.drawImage(element, 0, 0, size.width, size.height);
      return context.getImageData(0, 0, size.width, size.height).data;
    };
    const data = pixels(video);
    const other = pixels(reference);
    const result = {};
    for (const [name, [x0, y0, x1, y1]] of Object.entries(placeBoxes)) {
      const colour = [0, 0, 0];
      const referenceColour = [0, 0, 0];
      let changed = 0;
      let n = 0;
      for (let y = y0; y < y1; y += 1) {
        for (let x = x0; x < x1; x += 1) {
          const i = (y * size.width + x) * 4;
          let most = 0;
          for (let c = 0; c < 3; c += 1) {
            colour[c] += data[i + c];
            referenceColour[c] += other[i + c];
            most = Math.max(most, Math.abs(data[i + c] - other[i + c]));
          }
          if (most > 40) changed += 1;
          n += 1;
        }
      }
      result[name] = {
        colour: colour.map((sum) => Math.round(sum / n)),
        reference: referenceColour.map((sum) => Math.round(sum / n)),
        changed: changed / n,
      };
    }
    return result;
  }, [selector, referenceSelector, { width, height }, boxes]);
}

/** Polls `measure` until `accept` holds; returns the accepted measurement or throws the last. */
export async function eventually(measure, accept, { timeout = 20000, interval = 250, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    last = await measure();
    if (last !== null && accept(last)) return last;
    await sleep(interval);
  }
  throw new Error(`${what} not reached within ${timeout} ms; last measurement: ${JSON.stringify(last)}`);
}

/** Counts the frames a video element presents during `ms` milliseconds. */
export async function countFrames(page, selector, ms) {
  return page.evaluate(([sel, duration]) => new Promise((resolve) => {
    const video = document.querySelector(sel);
    let frames = 0;
    const onFrame = () => {
      frames += 1;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    setTimeout(() => resolve(frames), duration);
  }), [selector, ms]);
}

/** What the page got from getUserMedia (shown in #filtered), compared with the camera's track. */
export async function returnedTrackInfo(page) {
  return page.evaluate(() => {
    const track = document.getElementById('filtered').srcObject?.getVideoTracks()[0] ?? null;
    const camera = P2PCamera.cameraStream?.getVideoTracks()[0] ?? null;
    const pc = P2PCamera.peerConnection;
    return {
      state: P2PCamera.state,
      filtered: track ? P2PCamera.isFiltered(track) : false,
      isReceiverTrack: Boolean(track && pc && pc.getReceivers().some((r) => r.track === track)),
      isCameraTrack: Boolean(track && camera && (track === camera || track.id === camera.id)),
      trackState: track?.readyState ?? null,
      connectionState: pc?.connectionState ?? null,
    };
  });
}

export function colourDistance(a, b) {
  return Math.max(...a.map((value, i) => Math.abs(value - b[i])));
}

export function saveArtifact(name) {
  fs.mkdirSync(artifactsDir, { recursive: true });
  return path.join(artifactsDir, name);
}
