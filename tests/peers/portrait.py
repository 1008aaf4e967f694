"""A camera that shows a person: the public-domain portrait camera-pod's filter tests use
(camera-pod/tests/data/astronaut.png, scikit-image's astronaut, 512x512) scaled to the camera's
height and centred between grey bars, the same picture in every frame.

Also writes that picture as a Y4M clip for Chromium's fake camera, and prints the places the
tests look at (in the clip's pixels) as JSON:

    python tests/peers/portrait.py OUT.y4m [WIDTH HEIGHT]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

PORTRAIT_PNG = Path(__file__).resolve().parents[2] / "camera-pod" / "tests" / "data" / "astronaut.png"
PORTRAIT_SIZE = 512
BAR_Y = 128


@dataclass(frozen=True)
class Place:
    """A box in the 512x512 portrait (x0, y0, x1, y1) and the body part camera-pod's pose
    manifest (camera-pod/models/pose_landmark.manifest.yaml) gives it, None off the person."""

    box: tuple[int, int, int, int]
    part: str | None
    colour: str | None


# The places camera-pod/tests/filters.rs also checks, kept inside their part.
PLACES = {
    "face": Place((205, 105, 240, 145), "head", "#ffd200"),
    "chest": Place((190, 235, 230, 265), "torso", "#9c27b0"),
    # Head, neck ring and upper torso: where the skeleton's face, shoulder and torso lines run.
    "person": Place((120, 60, 340, 330), None, None),
    # The wall between her head and the shuttle model.
    "wall": Place((305, 15, 355, 70), None, None),
}


def _even(value: float) -> int:
    return int(round(value / 2)) * 2


class PortraitSource:
    """The portrait camera picture at one size, as YUV 4:2:0 planes (BT.601 limited range)."""

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2 or width < height:
            raise ValueError(f"size {width}x{height} must be even and at least as wide as high")
        self.width, self.height = width, height
        self.scale = height / PORTRAIT_SIZE
        self.left = (width - height) // 2 // 2 * 2
        with av.open(str(PORTRAIT_PNG)) as container:
            picture = next(container.decode(video=0))
        square = picture.reformat(width=height, height=height, format="yuv420p").to_ndarray()
        sy = square[:height]
        chroma = square[height:].reshape(2, height // 2, height // 2)
        y = np.full((height, width), BAR_Y, np.uint8)
        u = np.full((height // 2, width // 2), 128, np.uint8)
        v = np.full((height // 2, width // 2), 128, np.uint8)
        y[:, self.left : self.left + height] = sy
        c = self.left // 2
        u[:, c : c + height // 2] = chroma[0]
        v[:, c : c + height // 2] = chroma[1]
        self._planes = (y, u, v)

    def planes(self, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Y, U and V planes (every frame shows the same picture)."""
        return self._planes

    def packed(self, index: int = 0) -> np.ndarray:
        """The picture as the (height * 3 / 2, width) array PyAV takes for yuv420p."""
        return np.concatenate([p.ravel() for p in self._planes]).reshape(self.height * 3 // 2, self.width)

    def box(self, name: str) -> tuple[int, int, int, int]:
        """Place `name` in this picture's pixels, (x0, y0, x1, y1), with even corners."""
        x0, y0, x1, y1 = PLACES[name].box
        return (
            _even(self.left + x0 * self.scale),
            _even(y0 * self.scale),
            _even(self.left + x1 * self.scale),
            _even(y1 * self.scale),
        )

    def write_y4m(self, path: Path) -> None:
        """One frame of Y4M 4:2:0, which Chromium's fake camera repeats."""
        with open(path, "wb") as out:
            out.write(f"YUV4MPEG2 W{self.width} H{self.height} F30:1 Ip A1:1 C420jpeg\n".encode())
            out.write(b"FRAME\n")
            out.write(self.packed().tobytes())


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 4):
        raise SystemExit(f"usage: {argv[0]} OUT.y4m [WIDTH HEIGHT]")
    width, height = (int(argv[2]), int(argv[3])) if len(argv) == 4 else (640, 480)
    source = PortraitSource(width, height)
    source.write_y4m(Path(argv[1]))
    places = {
        name: {"box": source.box(name), "part": place.part, "colour": place.colour}
        for name, place in PLACES.items()
    }
    print(json.dumps({"width": width, "height": height, "places": places}))


if __name__ == "__main__":
    main(sys.argv)
