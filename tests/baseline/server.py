"""aiortc passthrough server: the baseline p2pcamera's benchmarks compare against.

It speaks the same signaling as camera-pod (``POST /offer`` with ``{"sdp", "type", "client"}``,
JSON errors, one camera at a time, same client replaces its old connection), echoes the received
video track back unchanged (like aiortc's original server sample without a model), answers
``ping<x>`` with ``pong<x>`` on the data channel and publishes ``{"type": "stats", ...}`` once a
second. It also serves the demo page and ``p2pcamera.js`` from ``static/``.

ICE is restricted to loopback: the only host candidate is 127.0.0.1, there is no STUN server, and
remote candidates that are not on 127.0.0.1 are dropped from offers.

    python tests/baseline/server.py --listen 127.0.0.1:7861
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import time
from pathlib import Path

import aioice.ice
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

LOG = logging.getLogger("baseline")
MAX_BODY_BYTES = 64 * 1024
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
LOOPBACK = "127.0.0.1"


def loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Host candidates on loopback only (aioice skips 127.0.0.1 by default)."""
    return [LOOPBACK] if use_ipv4 else []


aioice.ice.get_host_addresses = loopback_host_addresses


def keep_loopback_candidates(sdp: str) -> str:
    """Drop remote ICE candidates that are not on 127.0.0.1, so no traffic leaves loopback."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] != LOOPBACK:
                continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class EchoTrack(MediaStreamTrack):
    """Returns each received frame unchanged and counts them for the stats message."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.frames = 0

    async def recv(self):
        frame = await self.source.recv()
        self.frames += 1
        return frame


class Camera:
    """The one live peer connection and the client id that owns it."""

    def __init__(self) -> None:
        self.pc: RTCPeerConnection | None = None
        self.client: str | None = None
        self.relay = MediaRelay()

    def busy_for(self, client: str | None) -> bool:
        if self.pc is None or self.pc.connectionState in ("closed", "failed"):
            return False
        return client is None or client != self.client

    async def replace(self, pc: RTCPeerConnection, client: str | None) -> None:
        old, self.pc, self.client = self.pc, pc, client
        if old is not None:
            await old.close()

    async def release(self, pc: RTCPeerConnection) -> None:
        if self.pc is pc:
            self.pc, self.client = None, None
        await pc.close()


async def publish_stats(channel, echo: list[EchoTrack]) -> None:
    last_frames, last_time = 0, time.monotonic()
    while channel.readyState != "closed":
        await asyncio.sleep(1.0)
        if channel.readyState != "open":
            continue
        now = time.monotonic()
        frames = echo[0].frames if echo else 0
        fps = (frames - last_frames) / (now - last_time)
        last_frames, last_time = frames, now
        channel.send(
            json.dumps(
                {
                    "type": "stats",
                    "filter": "passthrough",
                    "input_fps": round(fps, 1),
                    "output_fps": round(fps, 1),
                    "model_ms": 0.0,
                    "dropped_frames": 0,
                }
            )
        )


def on_channel_message(channel, message) -> None:
    if isinstance(message, str) and message.startswith("ping"):
        channel.send("pong" + message[4:])
        return
    try:
        request = json.loads(message)
    except (TypeError, ValueError):
        return
    if isinstance(request, dict) and "filter" in request:
        ok = request.get("filter") == "passthrough"
        reply = {"type": "filter", "ok": ok, "filter": "passthrough"}
        if not ok:
            reply["error"] = "the baseline server only has the passthrough filter"
        channel.send(json.dumps(reply))


async def offer(request: web.Request) -> web.Response:
    camera: Camera = request.app["camera"]
    token: str | None = request.app["token"]
    if token is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return error_response(401, "missing_token", "missing bearer token")
        if not hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode()):
            return error_response(403, "wrong_token", "wrong token")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error_response(413, "too_large", "offer body over 64 KiB")
    try:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return error_response(413, "too_large", "offer body over 64 KiB")
        params = json.loads(body)
        sdp, kind = params["sdp"], params["type"]
        client = params.get("client")
        if not isinstance(sdp, str) or kind != "offer":
            raise ValueError("not an offer")
        if client is not None and not isinstance(client, str):
            raise ValueError("client must be a string")
    except (ValueError, KeyError, TypeError) as err:
        return error_response(400, "bad_request", f"malformed offer: {err}")
    if "m=video" not in sdp:
        return error_response(400, "no_video", "the offer has no video section")
    if camera.busy_for(client):
        return error_response(409, "camera_busy", "a camera is already connected")

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    echo: list[EchoTrack] = []

    @pc.on("datachannel")
    def on_datachannel(channel) -> None:
        channel.on("message", lambda message: on_channel_message(channel, message))
        asyncio.ensure_future(publish_stats(channel, echo))

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind == "video":
            echo.append(EchoTrack(camera.relay.subscribe(track)))
            pc.addTrack(echo[0])

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        LOG.info("peer connection %s (client %s)", pc.connectionState, client)
        if pc.connectionState in ("failed", "closed"):
            await camera.release(pc)

    try:
        await pc.setRemoteDescription(RTCSessionDescription(keep_loopback_candidates(sdp), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as err:  # aiortc raises plain exceptions for unusable offers
        await pc.close()
        return error_response(400, "bad_offer", f"cannot answer this offer: {err}")
    await camera.replace(pc, client)
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


def static_file(name: str, content_type: str):
    async def handler(request: web.Request) -> web.Response:
        path = request.app["static_dir"] / name
        return web.Response(body=path.read_bytes(), content_type=content_type, charset="utf-8")

    return handler


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def on_shutdown(app: web.Application) -> None:
    camera: Camera = app["camera"]
    if camera.pc is not None:
        await camera.pc.close()


def build_app(token: str | None, static_dir: Path) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app["camera"] = Camera()
    app["token"] = token
    app["static_dir"] = static_dir
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", static_file("index.html", "text/html"))
    app.router.add_get("/p2pcamera.js", static_file("p2pcamera.js", "text/javascript"))
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/offer", offer)
    return app


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if host != LOOPBACK:
        raise argparse.ArgumentTypeError("the baseline server listens on 127.0.0.1 only")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=os.environ.get("P2PCAMERA_BASELINE_LISTEN", "127.0.0.1:7861"),
        help="address to serve HTTP on (127.0.0.1:PORT)",
    )
    parser.add_argument("--token", default=os.environ.get("P2PCAMERA_TOKEN"), help="bearer token")
    parser.add_argument("--static-dir", type=Path, default=STATIC_DIR, help="demo page directory")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    host, port = args.listen
    # run_app turns SIGINT and SIGTERM into a clean shutdown that closes the peer connection.
    web.run_app(build_app(args.token, args.static_dir), host=host, port=port, print=None)


if __name__ == "__main__":
    main()
