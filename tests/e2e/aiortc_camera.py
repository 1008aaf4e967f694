"""An aiortc camera that connects through the router, for the Rust end-to-end tests.

It sends the synthetic camera (tests/peers) to
`POST <session-url>/offer` with the session's bearer token, and reports on
stdout, one JSON object per line:

- `{"event": "connected", ...}` once the first frame came back, with timings
  (seconds, monotonic): `offer_s` (offer made to answer received), `gather_s` (the
  part of `offer_s` before the offer was posted: aiortc gathers every candidate,
  a TURN allocation included, before it completes the offer), `ice_s`
  (answer to ICE connected), `first_frame_s` (answer to first returned frame),
  `green` (saturated-green fraction of that frame's chroma) and `path` (the selected
  candidate pair: `{"local": "host"|"relay"|..., "remote": ..., "protocol": "udp"|"tcp"|"tls"}`)
  and `answer_addresses` (the addresses of the answer's ICE candidates, sorted);
- `{"event": "error", "status": ..., "body": ...}` when the offer was refused;
- on the command `window <seconds>` from stdin: `{"event": "window", "frames": N,
  "distinct": D, "green": G, "state": ..., "round_trip_ms": {"p50": ..., "p95": ...,
  "frames": n}}` for the frames that came back during that many seconds (distinct =
  distinct stamped frame indices; the round trip of each frame the camera sent in
  the window and got back with its index readable, as bench/bench.py measures it:
  p50 and p95 are null when no index was readable, e.g. behind selfie-replace);
- on `close` (or end of stdin): closes the connection and exits.

`--ice-servers` takes the JSON a router's `/ice-servers` answers (TURN URLs and credential).
The router's (and a `turns:` server's) certificate is trusted through SSL_CERT_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/peers"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402

from bench import measure_window, percentile  # noqa: E402
from camera_client import CameraClient, ice_servers_from_json  # noqa: E402


def green_fraction(u: np.ndarray, v: np.ndarray) -> float:
    """Fraction of chroma samples that are saturated green (low Cb and low Cr)."""
    return float(np.mean((u < 90) & (v < 90)))


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def answer_addresses(sdp: str) -> list[str]:
    """The addresses of the ICE candidates an SDP carries (`a=candidate:... <address> <port> typ ...`)."""
    addresses = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 5:
                addresses.add(fields[4])
    return sorted(addresses)


def round_trip_ms(client: CameraClient, start: float, end: float) -> dict:
    """Median and 95th percentile round trip (ms) of the frames sent in [start, end) that came
    back with a readable index, and how many those were; null percentiles when none did."""
    latencies = measure_window(client, start, end).latencies

    def ms(fraction: float) -> float | None:
        return round(percentile(latencies, fraction) * 1000, 2) if latencies else None

    return {"p50": ms(0.5), "p95": ms(0.95), "frames": len(latencies)}


def latest_green(client: CameraClient) -> float | None:
    picture = client.latest_any_picture()
    return None if picture is None else green_fraction(picture[1], picture[2])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session-url", required=True, help="https://<router>/v1/sessions/<ns>/<name>")
    parser.add_argument("--token", required=True)
    parser.add_argument("--codec", default="VP8", choices=["VP8", "H264"])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the first frame")
    parser.add_argument("--ice-servers", default='{"iceServers": []}', help="an /ice-servers answer (JSON)")
    args = parser.parse_args()

    client = CameraClient(args.session_url, 640, 480, 30, codec=args.codec, token=args.token,
                          ice_servers=ice_servers_from_json(args.ice_servers))
    connected_at: list[float] = []
    offer_ready_at: list[float] = []

    def note_offer_ready(sdp: str) -> str:
        offer_ready_at.append(time.monotonic())
        return sdp

    client.offer_sdp = note_offer_ready

    @client.pc.on("connectionstatechange")
    def on_state() -> None:
        if client.pc.connectionState == "connected" and not connected_at:
            connected_at.append(time.monotonic())

    started = time.monotonic()
    reply = await client.connect()
    answered = time.monotonic()
    if reply.status != 200:
        emit(event="error", status=reply.status, body=reply.body)
        await client.close()
        return 1
    try:
        await client.wait_first_frame(args.timeout)
    except asyncio.TimeoutError:
        emit(event="error", status=0, body={"error": "no frame came back", "state": client.pc.connectionState})
        await client.close()
        return 1
    first = client.returned[0].received_at
    emit(
        event="connected",
        offer_s=answered - started,
        gather_s=offer_ready_at[0] - started,
        ice_s=(connected_at[0] - answered) if connected_at else None,
        first_frame_s=first - answered,
        green=latest_green(client),
        path=client.selected_path(),
        answer_addresses=answer_addresses(client.pc.remoteDescription.sdp),
        width=client.returned[0].width,
        height=client.returned[0].height,
    )

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "close":
            break
        if words[0] == "window":
            since = time.monotonic()
            await asyncio.sleep(float(words[1]))
            until = time.monotonic()
            frames = [f for f in client.returned if f.received_at >= since]
            distinct = {f.index for f in frames if f.index is not None}
            emit(
                event="window",
                frames=len(frames),
                distinct=len(distinct),
                green=latest_green(client),
                state=client.pc.connectionState,
                round_trip_ms=round_trip_ms(client, since, until),
            )
    await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
