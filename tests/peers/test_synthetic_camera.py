"""The frame stamp: readable after what codecs and filters do to a picture, and never
misread when damaged."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic_camera import (
    INDEX_MODULUS,
    PictureSource,
    decode_word,
    encode_word,
    read_index,
    split_packed,
    unwrap_index,
)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (320, 240)])
def test_every_index_reads_back_from_its_picture(size):
    source = PictureSource(*size)
    for index in (0, 1, 2, 255, 1234, INDEX_MODULUS - 1):
        y, _, _ = source.planes(index)
        assert read_index(y) == index


def test_sensor_noise_keeps_the_stamp_and_changes_every_frame():
    source = PictureSource(640, 480, noise=3.0)
    clean = PictureSource(640, 480)
    first, second = source.planes(5)[0], source.planes(6)[0]
    assert read_index(first) == 5 and read_index(second) == 6
    grain = first.astype(np.int16) - clean.planes(5)[0]
    assert 2.0 < float(grain.std()) < 4.0
    assert not np.array_equal(grain, second.astype(np.int16) - clean.planes(6)[0])


def test_indices_wrap_at_the_modulus():
    source = PictureSource(640, 480)
    y, _, _ = source.planes(INDEX_MODULUS + 7)
    assert read_index(y) == 7


def test_packed_picture_splits_into_the_same_planes():
    source = PictureSource(640, 480)
    packed = source.packed(99)
    assert packed.shape == (720, 640)
    for got, want in zip(split_packed(packed, 640, 480), source.planes(99)):
        np.testing.assert_array_equal(got, want)


def test_stamp_survives_noise_blur_and_a_brightness_shift():
    source = PictureSource(640, 480)
    y, _, _ = source.planes(3000)
    rng = np.random.default_rng(7)
    noisy = y.astype(np.float64) + rng.normal(0, 12, y.shape)
    kernel = np.ones(15) / 15
    blurred = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, noisy)
    blurred = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, blurred)
    shifted = np.clip(blurred * 0.5 + 60, 0, 255).astype(np.uint8)
    assert read_index(shifted) == 3000


def test_a_flat_picture_has_no_stamp():
    assert read_index(np.full((480, 640), 128, np.uint8)) is None


def test_a_flipped_bit_is_caught_by_the_check_bits():
    word = encode_word(1234)
    for bit in range(16):
        assert decode_word(word ^ (1 << bit)) is None


def test_a_swapped_cell_pair_is_not_misread():
    source = PictureSource(640, 480)
    y, _, _ = source.planes(1234)
    lay = source.layout
    first, second = lay.cell(0), lay.cell(1)
    y[first], y[second] = y[second].copy(), y[first].copy()
    assert read_index(y) is None


def test_unwrap_finds_the_newest_full_index():
    assert unwrap_index(5, newest_sent=INDEX_MODULUS + 10) == INDEX_MODULUS + 5
    assert unwrap_index(4090, newest_sent=INDEX_MODULUS + 10) == 4090
    assert unwrap_index(10, newest_sent=10) == 10
