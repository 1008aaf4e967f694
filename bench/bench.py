"""Benchmark of camera-pod against the aiortc passthrough baseline.

For each picture size, runs the aiortc baseline server, camera-pod with the
passthrough filter and camera-pod with selfie-blur one after another in the
same run, each driven by the same aiortc client that sends a synthetic camera
with the frame index stamped in every picture. Measures round-trip latency
(index read from the returned picture, matched to the moment the frame left
the camera), returned fps, dropped frames, time from offer to the first
filtered frame, and the server's CPU (/proc/<pid>/stat) and peak RSS (VmHWM).
Then a long run with the style model checks that latency stays flat, and the
built-in filters are timed alone, without WebRTC (per-frame time against
selfie-blur's budget: camera-pod/benches/filter_timings.rs).

First frames: each server is connected --connects times in a row (640x480,
passthrough), timing the offer to the first returned frame; for camera-pod also
where that time went on the pod (p2pcamera_pod_connect_stage_seconds from its
/metrics: answer sent, ICE connected, DTLS connected, first RTP in, first
filtered frame out, each since the pod received the offer). --before-bin adds
rows for another camera-pod binary (e.g. a build of the previous commit), so a
change is measured before and after in one run.

Prints a markdown report (and writes it to --output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/peers"))

from camera_client import CameraClient  # noqa: E402
from servers import ServerProcess, baseline_server, camera_pod, process_usage  # noqa: E402

# Frames sent this close to the end of a window may still be in flight; they
# are not counted as sent or dropped.
IN_FLIGHT_GRACE_S = 0.5


@dataclass
class Window:
    """Measurements over one time window of one connection."""

    latencies: list[float]
    returned_fps: float
    sent_fps: float
    dropped_fraction: float
    unreadable: int


@dataclass
class RunResult:
    server: str
    filter: str
    width: int
    height: int
    first_frame_s: float
    window: Window
    cpu_percent: float
    peak_rss_mib: float
    client_cpu_percent: float
    # camera-pod's mean seconds per frame in each stage (FRAME_STAGES); empty for the baseline.
    stages: dict[str, float]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def measure_window(client: CameraClient, start: float, end: float) -> Window:
    """Latency, rates and drops for frames that left the camera in [start, end)."""
    sent = {i: t for i, t in client.camera.sent_at.items() if start <= t < end - IN_FLIGHT_GRACE_S}
    first_arrival: dict[int, float] = {}
    unreadable = 0
    for frame in client.returned:
        if frame.index is None:
            unreadable += start <= frame.received_at < end
            continue
        first_arrival.setdefault(frame.index, frame.received_at)
    latencies = [first_arrival[i] - t for i, t in sent.items() if i in first_arrival]
    returned_in_window = sum(1 for t in first_arrival.values() if start <= t < end)
    duration = end - start
    dropped = 1.0 - len(latencies) / len(sent) if sent else float("nan")
    return Window(latencies, returned_in_window / duration,
                  len(sent) / (duration - IN_FLIGHT_GRACE_S), dropped, unreadable)


async def drive(server: ServerProcess, width: int, height: int, fps: int, warmup_s: float,
                seconds: float, codec: str, noise: float) -> tuple[CameraClient, float, float, float, float, float, float]:
    """Connects, warms up, streams for `seconds`. Returns the client, time to first frame,
    window start/end, the server's CPU seconds over the window and its peak RSS, and this
    client's CPU seconds over the window."""
    client = CameraClient(server.base_url, width, height, fps, codec, keep_pictures=1, noise=noise)
    reply = await client.connect()
    if reply.status != 200:
        raise RuntimeError(f"{server.name} refused the offer: {reply.status} {reply.body}")
    first_frame_s = await client.wait_first_frame(60.0)
    await asyncio.sleep(warmup_s)
    before, client_before = server.usage(), process_usage(os.getpid())
    start = time.monotonic()
    await asyncio.sleep(seconds)
    end = time.monotonic()
    after, client_after = server.usage(), process_usage(os.getpid())
    await asyncio.sleep(IN_FLIGHT_GRACE_S)
    await client.close()
    cpu_seconds = after.cpu_seconds - before.cpu_seconds
    client_cpu_seconds = client_after.cpu_seconds - client_before.cpu_seconds
    return client, first_frame_s, start, end, cpu_seconds, after.peak_rss_bytes, client_cpu_seconds


# The stages camera-pod reports in p2pcamera_pod_connect_stage_seconds, in order.
CONNECT_STAGES = ["answer_sent", "ice_connected", "dtls_connected", "first_rtp_in", "first_frame_out"]


@dataclass
class ConnectRuns:
    """Consecutive connections to one server: offer to first returned frame, and for
    camera-pod the seconds since its offer at which each connection reached each stage."""

    server: str
    first_frames: list[float]
    stages: dict[str, list[float]]


def metrics_text(server: ServerProcess) -> str:
    """The server's /metrics text; empty for a server without it."""
    try:
        with urllib.request.urlopen(server.base_url + "/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def connect_stage_sums(server: ServerProcess) -> dict[str, float]:
    """camera-pod's summed seconds per connection stage (empty for a server without them)."""
    pattern = re.compile(r'^p2pcamera_pod_connect_stage_seconds_sum\{stage="([a-z_]+)"\} (\S+)$', re.M)
    return {stage: float(value) for stage, value in pattern.findall(metrics_text(server))}


# camera-pod's per-frame stages: the column name and the histogram in its /metrics.
FRAME_STAGES = [("decode", "p2pcamera_pod_decode_duration_seconds"),
                ("filter", "p2pcamera_pod_model_duration_seconds"),
                ("encode", "p2pcamera_pod_encode_duration_seconds")]


def frame_stage_means(server: ServerProcess) -> dict[str, float]:
    """camera-pod's mean seconds per frame in each stage over its whole run (empty for a server
    without them)."""
    text = metrics_text(server)
    means = {}
    for stage, metric in FRAME_STAGES:
        total = re.search(rf"^{metric}_sum (\S+)$", text, re.M)
        count = re.search(rf"^{metric}_count (\S+)$", text, re.M)
        if total and count and float(count.group(1)) > 0:
            means[stage] = float(total.group(1)) / float(count.group(1))
    return means


async def connect_once(server: ServerProcess, args: argparse.Namespace) -> float:
    """One connection at 640x480 (the same client id each time, so it replaces the previous
    one at once); seconds from the offer to the first returned frame."""
    client = CameraClient(server.base_url, 640, 480, args.fps, args.codec, keep_pictures=1,
                          noise=args.noise, client_id="bench-first-frame")
    reply = await client.connect()
    if reply.status != 200:
        raise RuntimeError(f"{server.name} refused the offer: {reply.status} {reply.body}")
    try:
        return await client.wait_first_frame(30.0)
    finally:
        await client.close()


def run_connects(server: ServerProcess, label: str, args: argparse.Namespace) -> ConnectRuns:
    print(f"# {label} first frames ({args.connects} connections) ...", file=sys.stderr, flush=True)
    runs = ConnectRuns(label, [], {stage: [] for stage in CONNECT_STAGES})
    with server.start():
        for _ in range(args.connects):
            before = connect_stage_sums(server)
            runs.first_frames.append(asyncio.run(connect_once(server, args)))
            after = connect_stage_sums(server)
            for stage in CONNECT_STAGES:
                if stage in after:
                    runs.stages[stage].append(after[stage] - before.get(stage, 0.0))
            time.sleep(0.2)
    return runs


def run_one(server: ServerProcess, label: str, filter_name: str, width: int, height: int,
            args: argparse.Namespace) -> RunResult:
    print(f"# {label} {filter_name} {width}x{height} ...", file=sys.stderr, flush=True)
    with server.start():
        client, first, start, end, cpu, rss, client_cpu = asyncio.run(
            drive(server, width, height, args.fps, args.warmup, args.seconds, args.codec, args.noise)
        )
        stages = frame_stage_means(server)
    window = measure_window(client, start, end)
    return RunResult(label, filter_name, width, height, first, window,
                     100.0 * cpu / (end - start), rss / 2**20, 100.0 * client_cpu / (end - start), stages)


def run_style(args: argparse.Namespace) -> tuple[RunResult, list[Window]]:
    """A long run with the style model, and its consecutive windows of about 10 s."""
    width, height = 1280, 720
    server = camera_pod(json.dumps({"filter": "style", "style": args.style_index}), args.profile)
    print(f"# camera-pod style {width}x{height} for {args.style_seconds} s ...", file=sys.stderr, flush=True)
    with server.start():
        client, first, start, end, cpu, rss, client_cpu = asyncio.run(
            drive(server, width, height, args.fps, 0.0, args.style_seconds, args.codec, args.noise)
        )
        stages = frame_stage_means(server)
    whole = measure_window(client, start, end)
    result = RunResult("camera-pod", "style", width, height, first, whole,
                       100.0 * cpu / (end - start), rss / 2**20, 100.0 * client_cpu / (end - start), stages)
    count = max(1, round((end - start) / 10.0))
    step = (end - start) / count
    windows = [measure_window(client, start + k * step, start + (k + 1) * step) for k in range(count)]
    return result, windows


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.0f}"


def stage_cells(stages: dict[str, float]) -> str:
    """`decode / filter / encode` in ms with one decimal; n/a for a server without them."""
    if not stages:
        return "n/a"
    return " / ".join(f"{stages[s] * 1000:.1f}" if s in stages else "n/a" for s, _ in FRAME_STAGES)


def provenance(profile: str) -> str:
    """Commit, build profile, machine, load and date (bench/provenance.sh, shared by every report)."""
    script = Path(__file__).resolve().parent / "provenance.sh"
    return subprocess.run([str(script), profile], check=True, capture_output=True, text=True).stdout.strip()


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every number."""
    return f"{os.getloadavg()[0]:.2f}"


def filter_timings(args: argparse.Namespace) -> str:
    """The Markdown table of camera-pod/benches/filter_timings.rs, built in the report's profile."""
    print(f"# filter timings ({args.timing_runs} runs each) ...", file=sys.stderr, flush=True)
    profile = "dev" if args.profile == "debug" else args.profile
    features = ["--features", args.cargo_features] if args.cargo_features else []
    command = ["cargo", "bench", "--workspace", *features, "--bench", "filter_timings", "--profile", profile,
               "--", "--runs", str(args.timing_runs)]
    return subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def connects_table(runs: list[ConnectRuns]) -> list[str]:
    """Median offer-to-first-frame per server, and where camera-pod's time went."""
    lines = [
        "",
        "First frame, 640x480 passthrough, consecutive connections: offer (client) to the first "
        "returned frame, and each camera-pod stage in ms since the pod received the offer (medians).",
        "",
        "| server | connections | first frame p50 ms | min-max ms | " + " | ".join(CONNECT_STAGES) + " |",
        "|---|---|---|---|" + "---|" * len(CONNECT_STAGES),
    ]
    for r in runs:
        stages = [ms(statistics.median(r.stages[s])) if r.stages[s] else "n/a" for s in CONNECT_STAGES]
        lines.append(
            f"| {r.server} | {len(r.first_frames)} | {ms(statistics.median(r.first_frames))} | "
            f"{ms(min(r.first_frames))}-{ms(max(r.first_frames))} | " + " | ".join(stages) + " |"
        )
    return lines


def report(results: list[RunResult], style: tuple[RunResult, list[Window]] | None,
           connects: list[ConnectRuns], args: argparse.Namespace, load_at_start: str,
           provenance: str, timings: str | None) -> str:
    lines = [
        provenance,
        f"Python {platform.python_version()}; 1-minute load average {load_at_start} at start, {load_average()} at the end.",
        f"Client: aiortc {args.codec}, {args.fps} fps synthetic camera with luma noise sigma {args.noise:g}; {args.warmup:.0f} s warm-up, "
        f"{args.seconds:.0f} s measured per row; camera-pod {args.profile} build.",
        "CPU is the server process's user+system time over the measured window, in % of one core; "
        "client CPU is the same for the aiortc client (encode, decode, stamp reading), which shares the machine.",
        "",
        "Decode, filter and encode are camera-pod's mean ms per frame in each stage over the row's whole run.",
        "",
        "| size | server | filter | p50 ms | p99 ms | returned fps | sent fps | dropped | unreadable | "
        "first frame ms | CPU % | peak RSS MiB | client CPU % | decode / filter / encode ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w = r.window
        lines.append(
            f"| {r.width}x{r.height} | {r.server} | {r.filter} | {ms(percentile(w.latencies, 0.5))} | "
            f"{ms(percentile(w.latencies, 0.99))} | {w.returned_fps:.1f} | {w.sent_fps:.1f} | "
            f"{w.dropped_fraction:.1%} | {w.unreadable} | {ms(r.first_frame_s)} | {r.cpu_percent:.0f} | "
            f"{r.peak_rss_mib:.0f} | {r.client_cpu_percent:.0f} | "
            f"{stage_cells(r.stages) if r.stages or r.server == 'baseline' else 'none (forwarded)'} |"
        )
    lines.append("")
    for size in sorted({(r.width, r.height) for r in results}):
        by = {(r.server, r.filter): r for r in results if (r.width, r.height) == size}
        base = by.get(("baseline", "passthrough"))
        for filter_name in ("passthrough", TRANSCODED_PASSTHROUGH):
            pod = by.get(("camera-pod", filter_name))
            if base and pod and base.cpu_percent > 0:
                lines.append(
                    f"- {size[0]}x{size[1]} {filter_name} vs baseline: CPU {pod.cpu_percent / base.cpu_percent:.2f}x, "
                    f"p50 latency {percentile(pod.window.latencies, 0.5) / percentile(base.window.latencies, 0.5):.2f}x, "
                    f"peak RSS {pod.peak_rss_mib / base.peak_rss_mib:.2f}x"
                )
    if connects:
        lines += connects_table(connects)
    lines += ["", "| target | measured | met |", "|---|---|---|"] + target_rows(results, style, connects)
    if style is not None:
        whole, windows = style
        step = args.style_seconds / len(windows)
        lines += [
            "",
            f"Style model (style {args.style_index}), 1280x720, {args.style_seconds:.0f} s: returned "
            f"{whole.window.returned_fps:.1f} fps, dropped {whole.window.dropped_fraction:.1%}, "
            f"unreadable {whole.window.unreadable}, CPU {whole.cpu_percent:.0f} %, peak RSS "
            f"{whole.peak_rss_mib:.0f} MiB, first frame {ms(whole.first_frame_s)} ms; "
            f"decode / filter / encode {stage_cells(whole.stages)} ms per frame.",
            "",
            "| window | p50 ms | p99 ms | returned fps | frames measured |",
            "|---|---|---|---|---|",
        ]
        for k, w in enumerate(windows):
            lines.append(
                f"| {k * step:.0f}-{(k + 1) * step:.0f} s | {ms(percentile(w.latencies, 0.5))} | "
                f"{ms(percentile(w.latencies, 0.99))} | {w.returned_fps:.1f} | {len(w.latencies)} |"
            )
    if timings is not None:
        lines += ["", timings]
    return "\n".join(lines) + "\n"


# Passthrough decoded and encoded again (`--transcode-passthrough`), as camera-pod did before it
# forwarded the camera's own frames; a pseudo filter name for `--filters`.
TRANSCODED_PASSTHROUGH = "passthrough-transcoded"


# "Flat" latency: the last 10 s p99 is at most this much above the first 10 s p99.
FLAT_P99_GROWTH = 1.25


# Offer to the first filtered frame on loopback, at most (issue 14).
FIRST_FRAME_TARGET_S = 0.1


def target_rows(results: list[RunResult], style: tuple[RunResult, list[Window]] | None,
                connects: list[ConnectRuns]) -> list[str]:
    """The issue's targets, each as a markdown table row with what was measured."""
    by = {(r.server, r.filter, r.width): r for r in results}
    rows = []
    pod_connects = next((r for r in connects if r.server == "camera-pod"), None)
    if pod_connects:
        p50 = statistics.median(pod_connects.first_frames)
        rows.append(f"| offer to first filtered frame < {ms(FIRST_FRAME_TARGET_S)} ms on loopback (aiortc) | "
                    f"p50 {ms(p50)} ms over {len(pod_connects.first_frames)} connections | "
                    f"{'yes' if p50 < FIRST_FRAME_TARGET_S else 'no'} |")
    base, pod = by.get(("baseline", "passthrough", 640)), by.get(("camera-pod", "passthrough", 640))
    if base and pod:
        cpu_ratio = pod.cpu_percent / base.cpu_percent if base.cpu_percent else float("inf")
        p50_pod, p50_base = percentile(pod.window.latencies, 0.5), percentile(base.window.latencies, 0.5)
        met = cpu_ratio <= 0.5 and p50_pod <= p50_base
        rows.append(f"| passthrough 640x480: CPU <= 0.5x baseline, p50 not higher | CPU {cpu_ratio:.2f}x, "
                    f"p50 {ms(p50_pod)} vs {ms(p50_base)} ms | {'yes' if met else 'no'} |")
    blur = by.get(("camera-pod", "selfie-blur", 640))
    if blur:
        p99 = percentile(blur.window.latencies, 0.99)
        met = blur.window.returned_fps >= 29 and p99 < 0.1
        rows.append(f"| selfie-blur 640x480: >= 29 fps, p99 < 100 ms | {blur.window.returned_fps:.1f} fps, "
                    f"p99 {ms(p99)} ms | {'yes' if met else 'no'} |")
    if style is not None:
        _, windows = style
        head, tail = windows[0], windows[-1]
        first, last = percentile(head.latencies, 0.99), percentile(tail.latencies, 0.99)
        met = last <= first * FLAT_P99_GROWTH
        rows.append(f"| style 1280x720: p99 flat (last 10 s <= {FLAT_P99_GROWTH}x first 10 s) | "
                    f"p99 {ms(first)} -> {ms(last)} ms | {'yes' if met else 'no'} |")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds streamed before measuring")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--noise", type=float, default=2.0,
                        help="standard deviation of the camera's luma noise (0: a noiseless picture)")
    parser.add_argument("--codec", default="VP8", choices=["VP8", "H264"])
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--filters", default=f"passthrough,{TRANSCODED_PASSTHROUGH},selfie-blur",
                        help=f"camera-pod filters; {TRANSCODED_PASSTHROUGH} is passthrough with "
                        "--transcode-passthrough (decoded and encoded again)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the aiortc baseline rows")
    parser.add_argument("--style-seconds", type=float, default=60.0, help="0 skips the style run")
    parser.add_argument("--style-index", type=int, default=2,
                        help="style for the long run; styles 2, 4, 5, 7, 8, 14, 23 and 24 keep the "
                        "frame stamp readable, others repaint it")
    parser.add_argument("--timing-runs", type=int, default=20,
                        help="timed runs per filter and size of the filter timings; 0 skips them")
    parser.add_argument("--connects", type=int, default=10,
                        help="consecutive connections per server for the first-frame table; 0 skips it")
    parser.add_argument("--before-bin", type=Path,
                        help="another camera-pod binary (e.g. the previous commit's) measured as "
                        "'camera-pod before' in the same run")
    parser.add_argument("--profile", default=os.environ.get("P2PCAMERA_PROFILE", "release"))
    parser.add_argument("--cargo-features", default=os.environ.get("P2PCAMERA_CARGO_FEATURES", ""),
                        help="cargo features the filter timings are built with (e.g. camera-pod/cuda)")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    load_at_start = load_average()
    origin = provenance(args.profile)
    pods = [("camera-pod before", args.before_bin)] if args.before_bin else []
    pods.append(("camera-pod", None))

    def pod(filter_name: str, binary: Path | None) -> ServerProcess:
        if filter_name == TRANSCODED_PASSTHROUGH:
            server = camera_pod("passthrough", args.profile, extra_args=["--transcode-passthrough"])
        else:
            server = camera_pod(filter_name, args.profile)
        if binary is not None:
            server.argv[0] = str(binary)
        return server

    results: list[RunResult] = []
    for size in args.sizes.split(","):
        width, height = (int(x) for x in size.split("x"))
        if not args.no_baseline:
            results.append(run_one(baseline_server(), "baseline", "passthrough", width, height, args))
        for filter_name in args.filters.split(","):
            for label, binary in pods:
                results.append(run_one(pod(filter_name, binary), label, filter_name, width, height, args))
    connects: list[ConnectRuns] = []
    if args.connects > 0:
        if not args.no_baseline:
            connects.append(run_connects(baseline_server(), "baseline", args))
        connects += [run_connects(pod("passthrough", binary), label, args) for label, binary in pods]
    style = run_style(args) if args.style_seconds > 0 else None
    timings = filter_timings(args) if args.timing_runs > 0 else None
    text = report(results, style, connects, args, load_at_start, origin, timings)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
