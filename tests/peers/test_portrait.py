"""The portrait camera: the picture between grey bars, its places on the picture, and the Y4M
clip Chromium's fake camera plays holding the same picture."""

from __future__ import annotations

import av
import numpy as np

from portrait import BAR_Y, PLACES, PortraitSource
from synthetic_camera import split_packed


def chroma_mean(plane: np.ndarray, source: PortraitSource, name: str) -> float:
    x0, y0, x1, y1 = source.box(name)
    return float(plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2].mean())


def test_the_portrait_fills_the_middle_and_the_places_lie_on_it():
    source = PortraitSource(640, 480)
    y, u, v = source.planes()
    assert (y.shape, u.shape, v.shape) == ((480, 640), (240, 320), (240, 320))
    assert (y[:, :80] == BAR_Y).all() and (y[:, 560:] == BAR_Y).all()
    assert y[:, 80:560].std() > 30, "no picture between the bars"
    for name in PLACES:
        x0, y0, x1, y1 = source.box(name)
        assert 80 <= x0 < x1 <= 560 and 0 <= y0 < y1 <= 480, name
    # Her face is skin (more red than blue chroma); the wall beside her is nearly grey.
    assert chroma_mean(v, source, "face") > chroma_mean(u, source, "face") + 20
    assert abs(chroma_mean(u, source, "wall") - 128) < 12


def test_the_clip_holds_the_same_picture(tmp_path):
    source = PortraitSource(640, 480)
    clip = tmp_path / "portrait.y4m"
    source.write_y4m(clip)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (640, 480)
    for got, sent in zip(split_packed(frame.to_ndarray(format="yuv420p"), 640, 480), source.planes()):
        assert np.array_equal(got, sent)
