"""Interop of camera-pod with aiortc, an independent WebRTC implementation.

Each test starts its own camera-pod on a free loopback port, connects an aiortc
peer that sends the synthetic camera (frame index stamped in every picture),
and checks what comes back.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import numpy as np
import pytest

from camera_client import CameraClient, psnr
from lossy_relay import LossyRelay, strip_candidates
from portrait import PLACES, PortraitSource

WIDTH, HEIGHT, FPS = 640, 480, 30
FIRST_FRAME_TIMEOUT = 20.0
# Passthrough keeps the picture: what remains is codec error, which this camera
# keeps far above this floor (about 40 dB or more on a loopback link).
PASSTHROUGH_MIN_PSNR_DB = 30.0


def run(coroutine, timeout: float = 90.0):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def connected(base_url: str, **kwargs) -> CameraClient:
    """A client whose offer was accepted and whose first filtered frame came back."""
    client = CameraClient(base_url, WIDTH, HEIGHT, FPS, **kwargs)
    reply = await client.connect()
    assert reply.status == 200, f"offer refused: {reply.status} {reply.body}"
    await client.wait_first_frame(FIRST_FRAME_TIMEOUT)
    return client


def metric_values(base_url: str) -> dict[str, float]:
    """The unlabelled samples of the server's /metrics."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#") and "{" not in parts[0]:
            values[parts[0]] = float(parts[1])
    return values


def returned_fps(client: CameraClient, since: float) -> float:
    """Distinct readable frames per second that came back after `since`."""
    frames = [f for f in client.returned if f.received_at >= since]
    if len(frames) < 2:
        return 0.0
    distinct = {f.index for f in frames if f.index is not None}
    return len(distinct) / (frames[-1].received_at - since)


def green_fraction(u: np.ndarray, v: np.ndarray) -> float:
    """Fraction of chroma samples that are saturated green (low Cb and low Cr)."""
    return float(np.mean((u < 90) & (v < 90)))


def detail_energy(y: np.ndarray) -> float:
    """Mean absolute difference between horizontally and vertically neighbouring luma
    samples: high for the camera's fine checkerboard, low once it is blurred."""
    y = y.astype(np.int16)
    return float(np.mean(np.abs(np.diff(y, axis=1))) + np.mean(np.abs(np.diff(y, axis=0))))


def message_of_type(kind: str):
    """A predicate for data-channel messages that are JSON objects with this "type"."""

    def matches(message: str) -> bool:
        try:
            body = json.loads(message)
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("type") == kind

    return matches


async def eventually(measure, accept, timeout: float = 20.0, interval: float = 0.5):
    """Measures every `interval` seconds until `accept` holds or `timeout` passes; returns the
    last measurement either way, for the caller to assert on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = measure()
        if accept(value) or asyncio.get_running_loop().time() >= deadline:
            return value
        await asyncio.sleep(interval)


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def picture_difference(client: CameraClient) -> float:
    """Mean absolute Y/U/V difference, over the textured region, between the newest returned
    picture and the picture sent for it (the newest sent one when its stamp is unreadable:
    the textured region differs between frames only by its moving bar)."""
    source = client.camera.source
    newest = client.latest_any_picture()
    assert newest is not None, "no picture came back"
    y, u, v = newest
    index = client.returned[-1].index
    if index is None:
        index = client.camera.newest_sent
    assert y.shape == (HEIGHT, WIDTH), f"returned size {y.shape[::-1]} differs from the camera's"
    sy, su, sv = source.planes(index)
    rows = source.layout.texture_rows
    chroma_rows = slice(rows.start // 2, None)
    return (
        mean_abs_difference(y[rows], sy[rows])
        + mean_abs_difference(u[chroma_rows], su[chroma_rows])
        + mean_abs_difference(v[chroma_rows], sv[chroma_rows])
    ) / 3


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_passthrough_returns_the_same_picture(start_camera_pod, codec):
    server = start_camera_pod("passthrough")

    async def scenario():
        client = await connected(server.base_url, codec=codec)
        try:
            sdp = client.pc.remoteDescription.sdp
            assert re.search(rf"a=rtpmap:\d+ {codec}/90000", sdp), f"answer does not use {codec}"
            await asyncio.sleep(1.0)
            since = client.returned[-1].received_at
            await asyncio.sleep(3.0)
            fps = returned_fps(client, since)
            assert fps >= 15, f"only {fps:.1f} fps came back from a {FPS} fps camera"
            newest = client.returned[-1]
            assert (newest.width, newest.height) == (WIDTH, HEIGHT)
            stamped = client.latest_picture()
            assert stamped is not None, "no returned picture carries a readable frame index"
            index, y, u, v = stamped
            sy, su, sv = client.camera.source.planes(index)
            for plane, got, sent in (("Y", y, sy), ("U", u, su), ("V", v, sv)):
                quality = psnr(got, sent)
                assert quality >= PASSTHROUGH_MIN_PSNR_DB, (
                    f"{plane} plane of frame {index} is {quality:.1f} dB from the sent picture"
                )
        finally:
            await client.close()

    run(scenario())


def test_selfie_replace_turns_a_background_without_a_person_green(start_camera_pod):
    server = start_camera_pod(json.dumps({"filter": "selfie-replace", "color": "#00ff00"}))

    async def scenario():
        client = await connected(server.base_url)
        try:
            sent = client.camera.source.planes(0)
            assert green_fraction(sent[1], sent[2]) < 0.05, "the camera itself must not be green"
            await asyncio.sleep(2.0)
            _, u, v = client.latest_any_picture()
            fraction = green_fraction(u, v)
            assert fraction >= 0.8, f"only {fraction:.0%} of the picture turned green"
        finally:
            await client.close()

    run(scenario())


def test_selfie_blur_blurs_a_background_without_a_person(start_camera_pod):
    server = start_camera_pod("selfie-blur")

    async def scenario():
        client = await connected(server.base_url)
        try:
            await asyncio.sleep(2.0)
            y, _, _ = client.latest_any_picture()
            rows = client.camera.source.layout.texture_rows
            sent_y, _, _ = client.camera.source.planes(client.camera.newest_sent)
            ratio = detail_energy(y[rows]) / detail_energy(sent_y[rows])
            assert ratio < 0.5, f"the background kept {ratio:.0%} of its fine detail"
        finally:
            await client.close()

    run(scenario())


def test_style_changes_the_picture(start_camera_pod):
    server = start_camera_pod("style")

    async def scenario():
        client = await connected(server.base_url)
        try:
            await asyncio.sleep(2.0)
            difference = picture_difference(client)
            assert difference >= 20, f"styled picture differs from the camera by only {difference:.1f}"
        finally:
            await client.close()

    run(scenario())


def yuv_of(colour: str) -> np.ndarray:
    """A `#rrggbb` colour in BT.601 limited range, as camera-pod converts it."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return np.array([
        ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16,
        ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128,
        ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128,
    ], np.float64)


def full_resolution(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(height, width, 3) Y, U, V, the chroma repeated to the luma's size."""
    u, v = (plane.repeat(2, axis=0).repeat(2, axis=1) for plane in (u, v))
    return np.stack([y, u, v], axis=-1).astype(np.int16)


def in_place(picture: np.ndarray, source: PortraitSource, name: str) -> np.ndarray:
    x0, y0, x1, y1 = source.box(name)
    return picture[y0:y1, x0:x1]


def mean_in_place(picture: np.ndarray, source: PortraitSource, name: str) -> np.ndarray:
    """Mean Y, U, V of a place."""
    return in_place(picture, source, name).reshape(-1, 3).mean(axis=0)


def changed_fractions(client: CameraClient) -> dict[str, float]:
    """For each place of the portrait, the fraction of its pixels in the newest returned picture
    whose luma differs from the sent picture's by more than 40 or whose chroma does by more than
    20 (far above codec error on this still picture)."""
    source = client.camera.source
    difference = np.abs(full_resolution(*client.latest_any_picture()) - full_resolution(*source.planes()))
    changed = (difference[..., 0] > 40) | (difference[..., 1:].max(axis=-1) > 20)
    return {name: float(np.mean(in_place(changed, source, name))) for name in PLACES}


def test_pose_draws_the_skeleton_over_the_person(start_camera_pod):
    server = start_camera_pod("pose")

    async def scenario():
        client = await connected(server.base_url, source=PortraitSource(WIDTH, HEIGHT))
        try:
            # The first frames find her and then track the region around her.
            changed = await eventually(
                lambda: changed_fractions(client),
                lambda f: 0.03 <= f["person"] <= 0.4 and f["face"] >= 0.1 and f["wall"] <= 0.01,
            )
            person, face, wall = changed["person"], changed["face"], changed["wall"]
            assert person >= 0.03, f"the skeleton changed only {person:.1%} of her head and torso"
            assert person <= 0.4, f"the skeleton covered {person:.1%} of her head and torso"
            assert face >= 0.1, f"the face's points and lines changed only {face:.1%} of her face"
            assert wall <= 0.01, f"{wall:.1%} of the wall beside her changed"
        finally:
            await client.close()

    run(scenario())


def test_body_parts_colours_her_head_and_torso(start_camera_pod):
    server = start_camera_pod("body-parts")  # 70 % over the camera picture

    async def scenario():
        client = await connected(server.base_url, source=PortraitSource(WIDTH, HEIGHT))
        try:
            source = client.camera.source
            changed = await eventually(
                lambda: changed_fractions(client), lambda f: f["person"] >= 0.5 and f["wall"] <= 0.01
            )
            person, wall = changed["person"], changed["wall"]
            assert person >= 0.5, f"only {person:.0%} of her head and torso changed"
            assert wall <= 0.01, f"{wall:.1%} of the wall beside her changed"
            got = full_resolution(*client.latest_any_picture())
            sent = full_resolution(*source.planes())
            for name in ("face", "chest"):
                place = PLACES[name]
                colour = mean_in_place(got, source, name)
                expected = 0.7 * yuv_of(place.colour) + 0.3 * mean_in_place(sent, source, name)
                assert np.abs(colour - expected).max() <= 12, (
                    f"{name}: YUV {colour.round()} is not the {place.part} colour at 70 % "
                    f"over the camera, {expected.round()}"
                )
        finally:
            await client.close()

    run(scenario())


def test_data_channel_switches_filter_at_run_time(start_camera_pod):
    server = start_camera_pod("passthrough")

    async def scenario():
        client = await connected(server.base_url)
        try:
            await client.wait_channel_open(5.0)
            await asyncio.sleep(1.0)
            before = picture_difference(client)
            assert before < 5, f"passthrough differs from the camera by {before:.1f}"
            client.send(json.dumps({"filter": "style", "style": 3}))
            reply = json.loads(await client.wait_message(message_of_type("filter"), 10.0))
            assert reply.get("ok") is True, f"filter switch refused: {reply}"
            difference = await eventually(lambda: picture_difference(client), lambda d: d >= 20)
            assert difference >= 20, f"after switching to style the picture differs by only {difference:.1f}"
        finally:
            await client.close()

    run(scenario())


def test_data_channel_answers_ping_and_publishes_stats(start_camera_pod):
    server = start_camera_pod("passthrough")

    async def scenario():
        client = await connected(server.base_url)
        try:
            await client.wait_channel_open(5.0)
            client.send("ping 1234.5")
            assert await client.wait_message(lambda m: m.startswith("pong"), 5.0) == "pong 1234.5"

            # Stats are published once a second; skip the first, which may predate any video.
            await asyncio.sleep(2.5)
            stats = [json.loads(m) for m in client.messages if message_of_type("stats")(m)]
            assert len(stats) >= 2, f"{len(stats)} stats messages in 2.5 s"
            latest = stats[-1]
            for key in ("input_fps", "output_fps", "model_ms", "dropped_frames"):
                assert isinstance(latest.get(key), (int, float)), f"stats lack {key}: {latest}"
            assert latest["input_fps"] > 10, f"stats report {latest['input_fps']} input fps"
            assert latest["output_fps"] > 10, f"stats report {latest['output_fps']} output fps"
        finally:
            await client.close()

    run(scenario())


def test_second_client_is_refused_while_the_first_is_live(start_camera_pod):
    server = start_camera_pod("passthrough")

    async def scenario():
        first = await connected(server.base_url, client_id="camera-a")
        second = CameraClient(server.base_url, WIDTH, HEIGHT, FPS, client_id="camera-b")
        try:
            reply = await second.connect()
            assert reply.status == 409, f"second camera got {reply.status} {reply.body}"
            assert reply.error_code, f"409 without a JSON error code: {reply.body}"
            count = len(first.returned)
            await asyncio.sleep(1.0)
            assert len(first.returned) > count + 10, "the first camera stopped after the refusal"
        finally:
            await second.close()
            await first.close()

    run(scenario())


def test_same_client_reconnecting_replaces_its_connection(start_camera_pod):
    server = start_camera_pod("passthrough")

    async def scenario():
        old = await connected(server.base_url, client_id="camera-a")
        new = None
        try:
            new = await connected(server.base_url, client_id="camera-a")
            await asyncio.sleep(2.0)
            old_count, new_count = len(old.returned), len(new.returned)
            await asyncio.sleep(2.0)
            assert len(new.returned) >= new_count + 10, "the reconnected camera stopped getting video"
            assert len(old.returned) == old_count, "the replaced connection still gets video"
        finally:
            if new is not None:
                await new.close()
            await old.close()

    run(scenario())


def test_offers_without_the_right_token_are_refused(start_camera_pod):
    server = start_camera_pod("passthrough", token="correct-token")

    async def scenario():
        for token, statuses in ((None, {401}), ("wrong-token", {401, 403})):
            client = CameraClient(server.base_url, WIDTH, HEIGHT, FPS, token=token)
            try:
                reply = await client.connect()
                assert reply.status in statuses, f"token {token!r} got {reply.status} {reply.body}"
                assert reply.error_code, f"refusal without a JSON error code: {reply.body}"
            finally:
                await client.close()
        client = await connected(server.base_url, token="correct-token")
        await client.close()

    run(scenario())


def test_lost_packets_are_asked_for_and_resent_both_ways(start_camera_pod):
    """One RTP packet in 10 lost in each direction: each receiver asks for the missing
    packets with NACKs, each sender resends them, and camera-pod waits for the resent
    packets instead of dropping frames until a key frame, so the video keeps its frame rate."""
    server = start_camera_pod("passthrough")

    async def scenario():
        relay = LossyRelay(drop_every=10)
        client = CameraClient(server.base_url, WIDTH, HEIGHT, FPS,
                              offer_sdp=strip_candidates, answer_sdp=relay.route_answer)
        try:
            reply = await client.connect()
            assert reply.status == 200, f"offer refused: {reply.status} {reply.body}"
            await client.wait_first_frame(FIRST_FRAME_TIMEOUT)
            relay.dropping = True
            since = time.monotonic()
            await asyncio.sleep(6.0)
            relay.dropping = False
            fps = returned_fps(client, since)
            await asyncio.sleep(1.5)  # the answers to the last NACKs
            for name, lossy, feedback in (
                ("camera-pod -> client", relay.to_client, relay.to_server),
                ("client -> camera-pod", relay.to_server, relay.to_client),
            ):
                dropped, resent = len(lossy.dropped), len(lossy.retransmitted)
                assert dropped >= 15, f"{name}: only {dropped} of {lossy.rtp_packets} packets dropped"
                assert feedback.nacks >= 1, f"{name}: the receiver sent no NACK for {dropped} lost packets"
                assert resent >= 0.8 * dropped, f"{name}: {resent} of {dropped} lost packets resent"
            assert fps >= 15, f"only {fps:.1f} fps came back while packets were lost"
            # camera-pod counts the lost camera packets that came back in time, and those it gave up on.
            metrics = await asyncio.to_thread(metric_values, server.base_url)
            dropped = len(relay.to_server.dropped)
            recovered = metrics["p2pcamera_pod_rtp_packets_recovered_total"]
            given_up = metrics["p2pcamera_pod_rtp_packets_lost_total"]
            assert recovered >= 0.8 * dropped, f"{recovered} of {dropped} lost packets counted as recovered"
            assert given_up <= 0.2 * dropped, f"{given_up} of {dropped} lost packets given up"
        finally:
            await client.close()
            relay.close()

    run(scenario())
