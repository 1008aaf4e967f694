"""An aiortc peer that plays the browser: it sends a synthetic camera to a
camera server (`POST /offer`, the aiortc sample's wire format) and records the
filtered frames that come back, with the frame index read from each picture.

Only loopback host candidates are gathered and no STUN server is used; a TURN server
given in `ice_servers` adds a relayed candidate.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from fractions import Fraction

import aioice.ice
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    MediaStreamTrack,
)
from av import VideoFrame

from portrait import PortraitSource
from synthetic_camera import PictureSource, read_index, split_packed, unwrap_index

VIDEO_CLOCK_RATE = 90000


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


# aioice gathers on every interface and skips loopback; the peers here talk
# over 127.0.0.1 only.
aioice.ice.get_host_addresses = _loopback_host_addresses


@dataclass
class OfferReply:
    status: int
    body: dict

    @property
    def error_code(self) -> str | None:
        error = self.body.get("error")
        return error.get("code") if isinstance(error, dict) else None


def post_json(url: str, payload: dict, token: str | None = None, timeout: float = 30.0) -> OfferReply:
    """POST a JSON body; any HTTP status comes back as an OfferReply."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        body = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        body = {"unparsed": raw.decode(errors="replace")}
    return OfferReply(status, body if isinstance(body, dict) else {"value": body})


class SyntheticCameraTrack(MediaStreamTrack):
    """A camera at a fixed frame rate that shows `source`'s pictures; like a real camera it
    skips frames the encoder was too slow to take, and remembers when each frame left."""

    kind = "video"

    def __init__(self, source: PictureSource | PortraitSource, fps: int) -> None:
        super().__init__()
        self.source = source
        self.fps = fps
        self.sent_at: dict[int, float] = {}
        self.newest_sent = -1
        self.skipped = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        index = self.newest_sent + 1
        due = self._start + index / self.fps
        if now < due:
            await asyncio.sleep(due - now)
        else:
            on_time = int((now - self._start) * self.fps)
            if on_time > index:
                self.skipped += on_time - index
                index = on_time
        frame = VideoFrame.from_ndarray(self.source.packed(index), format="yuv420p")
        frame.pts = index * VIDEO_CLOCK_RATE // self.fps
        frame.time_base = Fraction(1, VIDEO_CLOCK_RATE)
        self.sent_at[index] = time.monotonic()
        self.newest_sent = index
        return frame


@dataclass
class ReturnedFrame:
    received_at: float
    index: int | None  # full frame index, None when the stamp is unreadable
    width: int
    height: int


@dataclass
class CameraClient:
    """One camera connection to a camera server at `base_url`."""

    base_url: str
    width: int = 640
    height: int = 480
    fps: int = 30
    codec: str = "VP8"
    token: str | None = None
    client_id: str | None = None
    keep_pictures: int = 30
    noise: float = 0.0  # standard deviation of the camera's luma noise
    # What the camera shows: the synthetic camera (default, with `noise`) or the portrait.
    source: PictureSource | PortraitSource | None = None
    returned: list[ReturnedFrame] = field(default_factory=list)
    # The most recent returned pictures: (full index or None, Y, U, V).
    pictures: collections.deque = field(default_factory=collections.deque)
    messages: list[str] = field(default_factory=list)
    offer_started_at: float | None = None
    # Rewrites of the offer as posted and of the answer before it is applied (e.g. to route
    # the media through a relay).
    offer_sdp: Callable[[str], str] | None = None
    answer_sdp: Callable[[str], Awaitable[str]] | None = None
    # `RTCIceServer`s, e.g. from the router's `/ice-servers` (see ice_servers_from_json). aioice
    # uses the first TURN URL it supports.
    ice_servers: list[RTCIceServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        source = self.source or PictureSource(self.width, self.height, self.noise)
        self.camera = SyntheticCameraTrack(source, self.fps)
        self.channel = self.pc.createDataChannel("p2pcamera")
        self.channel.on("message", self._on_message)
        self._channel_open = asyncio.Event()
        self.channel.on("open", self._channel_open.set)
        self._message_arrived = asyncio.Condition()
        self._first_frame = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self.pc.on("track", self._on_track)

    def _on_message(self, message) -> None:
        text = message if isinstance(message, str) else message.decode(errors="replace")
        self.messages.append(text)

        async def notify() -> None:
            async with self._message_arrived:
                self._message_arrived.notify_all()

        asyncio.ensure_future(notify())

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and self._reader is None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended: MediaStreamError or connection closed
                return
            received_at = time.monotonic()
            y, u, v = split_packed(frame.to_ndarray(format="yuv420p"), frame.width, frame.height)
            index12 = read_index(y)
            index = None
            if index12 is not None and self.camera.newest_sent >= 0:
                index = unwrap_index(index12, self.camera.newest_sent)
            self.returned.append(ReturnedFrame(received_at, index, frame.width, frame.height))
            self.pictures.append((index, y, u, v))
            while len(self.pictures) > self.keep_pictures:
                self.pictures.popleft()
            self._first_frame.set()

    def offer_payload(self) -> dict:
        sdp = self.pc.localDescription.sdp
        if self.offer_sdp is not None:
            sdp = self.offer_sdp(sdp)
        payload = {"sdp": sdp, "type": self.pc.localDescription.type}
        if self.client_id is not None:
            payload["client"] = self.client_id
        return payload

    async def connect(self) -> OfferReply:
        """Offer, post it, apply the answer. Returns the server's reply, also when it refused."""
        self.offer_started_at = time.monotonic()
        transceiver = self.pc.addTransceiver(self.camera, direction="sendrecv")
        mime = f"video/{self.codec}"
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
        if not codecs:
            raise ValueError(f"aiortc has no codec {mime}")
        transceiver.setCodecPreferences(codecs)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        reply = await asyncio.to_thread(
            post_json, f"{self.base_url}/offer", self.offer_payload(), self.token
        )
        if reply.status == 200:
            answer = reply.body["sdp"]
            if self.answer_sdp is not None:
                answer = await self.answer_sdp(answer)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type=reply.body["type"]))
        return reply

    async def wait_first_frame(self, timeout: float) -> float:
        """Seconds from the offer to the first returned frame."""
        await asyncio.wait_for(self._first_frame.wait(), timeout)
        return self.returned[0].received_at - self.offer_started_at

    async def wait_channel_open(self, timeout: float) -> None:
        await asyncio.wait_for(self._channel_open.wait(), timeout)

    async def wait_message(self, predicate, timeout: float) -> str:
        """The first data-channel message (already received or arriving) that satisfies predicate."""

        async def find() -> str:
            async with self._message_arrived:
                while True:
                    for message in self.messages:
                        if predicate(message):
                            return message
                    await self._message_arrived.wait()

        return await asyncio.wait_for(find(), timeout)

    def send(self, message: str) -> None:
        self.channel.send(message)

    def latest_picture(self, min_index: int = 0):
        """The newest returned picture with a readable index >= min_index, as (index, y, u, v)."""
        for picture in reversed(self.pictures):
            if picture[0] is not None and picture[0] >= min_index:
                return picture
        return None

    def latest_any_picture(self):
        """The newest returned picture whatever its stamp, as (y, u, v)."""
        return self.pictures[-1][1:] if self.pictures else None

    def selected_path(self) -> dict | None:
        """The candidate pair ICE selected, as p2pcamera.js reports it: the local and remote
        candidate types (host, srflx, prflx, relay) and the protocol this client's packets
        travel on (udp; for a relayed candidate the transport to the TURN server: udp, tcp or
        tls). None before a pair is selected."""
        for transceiver in self.pc.getTransceivers():
            transport = transceiver.receiver.transport
            if transport is None:
                continue
            connection = transport.transport._connection
            pair = connection._nominated.get(1)
            if pair is None:
                continue
            local = pair.local_candidate
            protocol = local.transport.lower()
            if local.type == "relay":
                protocol = "tls" if connection.turn_ssl else connection.turn_transport
            return {"local": local.type, "remote": pair.remote_candidate.type, "protocol": protocol}
        return None

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass


def ice_servers_from_json(text: str) -> list[RTCIceServer]:
    """The `RTCIceServer`s of an `/ice-servers` answer: `{"iceServers": [{"urls", "username",
    "credential"}], "ttl": ...}`."""
    return [
        RTCIceServer(urls=server["urls"], username=server.get("username"), credential=server.get("credential"))
        for server in json.loads(text)["iceServers"]
    ]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two 8-bit planes."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
