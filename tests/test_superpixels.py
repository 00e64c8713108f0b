"""Superpixel decoding and mapping: exact against the definition, on every shape."""

from __future__ import annotations

import functools

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from isicarchive import superpixels as sp
from isicarchive.testing.generator import superpixel_labels


def reference_decode(rgb: np.ndarray) -> np.ndarray:
    """The definition, pixel by pixel: label = R + 256*G + 65536*B."""
    out = np.zeros(rgb.shape[:2], dtype=np.int32)
    for y in range(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            r, g, b = (int(v) for v in rgb[y, x, :3])
            out[y, x] = r + 256 * g + 65536 * b
    return out


def reference_map(idx: np.ndarray) -> np.ndarray:
    """The padded map by its definition: one pass over the flat pixels in C order."""
    flat = idx.ravel().tolist()
    n = max(flat) + 1
    counts = [0] * n
    for label in flat:
        counts[label] += 1
    out = np.zeros((n, max(counts) + 1), dtype=np.int32)
    filled = [0] * n
    for pixel, label in enumerate(flat):
        out[label, filled[label]] = pixel
        filled[label] += 1
    out[:, -1] = counts
    return out


def assert_padded_map_of(got: np.ndarray, idx: np.ndarray) -> None:
    """The padded map's definition, checked without building it, for images too large for the loop: row
    ``label`` lists exactly the flat positions of that label's pixels, in increasing order, then zeros, and its
    last column is their count. (Few temporaries of the image's size: at 4000x6000 each is ~100 MB of fresh
    pages, and faulting them in cost as much as the comparisons.)"""
    flat = idx.ravel()
    counts = np.bincount(flat)
    assert got.dtype == np.int32 and got.shape == (counts.size, counts.max() + 1)
    np.testing.assert_array_equal(got[:, -1], counts)
    body = got[:, :-1]
    listed = np.arange(body.shape[1])[None, :] < counts[:, None]
    positions = body[listed]  # row by row: every label's pixels in the order listed
    del listed
    assert positions.size == flat.size and positions.min() >= 0 and positions.max() < flat.size
    # the padding is zeros: no cell of the body is non-zero but the listed ones
    assert np.count_nonzero(body) == np.count_nonzero(positions)
    # each pixel listed is of its row's label: the least and the greatest label in each row are the row's own
    present = np.flatnonzero(counts)
    starts = (np.cumsum(counts) - counts)[present]
    labels = flat[positions]
    assert np.array_equal(np.minimum.reduceat(labels, starts), present)
    assert np.array_equal(np.maximum.reduceat(labels, starts), present)
    del labels
    # ... and each row rises strictly (no pixel twice): so a row holds all counts[label] pixels of its label
    rising = positions[1:] > positions[:-1]
    rising[starts[1:] - 1] = True  # a row's first entry may be below the last row's
    assert rising.all()


label_images = arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 20))


@settings(max_examples=200, deadline=None)
@given(label_images)
def test_map_matches_definition_on_random_labels(idx: np.ndarray) -> None:
    expected = reference_map(idx)
    got = sp.superpixel_map(idx)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(label_images)
def test_compact_round_trips(idx: np.ndarray) -> None:
    comp = sp.compact(idx)
    np.testing.assert_array_equal(sp.map_from_compact(comp), reference_map(idx))
    assert comp.offsets[-1] == idx.size and comp.shape == idx.shape
    # every label's pixels, compared as one list (assert_array_equal per label took half the test's CPU)
    labels = range(comp.counts.size)
    assert [comp.pixels(label).tolist() for label in labels] == [np.flatnonzero(idx.ravel() == label).tolist()
                                                                  for label in labels]


@settings(max_examples=100, deadline=None)
@given(arrays(np.int32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, (1 << 24) - 1)))
def test_encode_decode_round_trip(idx: np.ndarray) -> None:
    rgb = sp.encode(idx)
    assert rgb.dtype == np.uint8 and rgb.shape == idx.shape + (3,)
    np.testing.assert_array_equal(sp.decode(rgb), idx)
    np.testing.assert_array_equal(sp.decode(rgb), reference_decode(rgb))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 5))
def test_runs_of_blocks_and_single_superpixel(rows: int, cols: int, shift: int) -> None:
    """Block images take the run-length path; a single label is one run."""
    idx = (np.arange(rows)[:, None] // 4 * 10 + (np.arange(cols)[None, :] + shift) // 5).astype(np.int32)
    np.testing.assert_array_equal(sp.superpixel_map(idx), reference_map(idx))
    single = np.zeros((rows, cols), np.int32)
    expected = np.concatenate([np.arange(rows * cols), [rows * cols]])[None, :]
    np.testing.assert_array_equal(sp.superpixel_map(single), expected)


def test_labels_that_never_occur_get_count_zero() -> None:
    idx = np.array([[0, 3], [3, 5]], dtype=np.int32)
    m = sp.superpixel_map(idx)
    assert m.shape == (6, 3)
    assert m[:, -1].tolist() == [1, 0, 0, 2, 0, 1]
    assert m[3, :2].tolist() == [1, 2] and not m[1].any()


def test_decode_with_alpha_and_rejects_bad_input() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 7
    rgba[..., 3] = 255
    assert (sp.decode(rgba) == 7).all()
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((0, 3, 3), np.uint8), np.zeros((2, 2, 2), np.uint8),
                np.full((2, 2, 3), 300, np.int32)):
        with pytest.raises(ValueError):
            sp.decode(bad)
    with pytest.raises(ValueError):
        sp.superpixel_map(np.array([[-1, 0]]))
    with pytest.raises(ValueError):
        sp.superpixel_map(np.zeros((2, 2), np.float32))


@functools.cache
def _archive_like() -> np.ndarray:
    labels = superpixel_labels(1022, 767, 1000, seed=4)
    labels.setflags(write=False)
    return labels


def _realistic(height: int, width: int) -> np.ndarray:
    """Archive-like superpixels (~1000 compact patches) at any size: Voronoi at 767x1022, scaled."""
    base = _archive_like()
    ys = np.arange(height) * base.shape[0] // height
    xs = np.arange(width) * base.shape[1] // width
    # base[ys[:, None], xs[None, :]], made as repeated rows, then columns (ys and xs rise): 5-10x less CPU
    rows = np.repeat(base, np.bincount(ys, minlength=base.shape[0]), axis=0)
    return np.repeat(rows, np.bincount(xs, minlength=base.shape[1]), axis=1)


def test_767x1022_matches_definition_exactly() -> None:
    idx = _realistic(767, 1022)
    rgb = sp.encode(idx)
    np.testing.assert_array_equal(sp.decode(rgb), idx)
    np.testing.assert_array_equal(sp.superpixel_map(sp.decode(rgb)), reference_map(idx))


@pytest.mark.parametrize("shape", [(3000, 4000), (4000, 6000)])
def test_large_images_decode_and_map_by_the_definition(shape: tuple[int, int]) -> None:
    idx = _realistic(*shape)
    decoded = sp.decode(sp.encode(idx))
    assert decoded.dtype == np.int32
    assert np.array_equal(decoded, idx)  # (assert_array_equal's checks and report take 25 times as long here)
    assert_padded_map_of(sp.superpixel_map(decoded), idx)


def test_real_superpixel_png_from_shared_fixtures() -> None:
    from fixture_paths import DEMO_PNG

    if not DEMO_PNG.exists():
        pytest.skip("../shared/fixtures is not present")
    rgb = np.asarray(iio.imread(DEMO_PNG))
    idx = sp.decode(rgb)
    np.testing.assert_array_equal(idx, reference_decode(rgb) if rgb.shape[0] * rgb.shape[1] < 50_000
                                  else rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)
                                  + 65536 * rgb[..., 2].astype(np.int32))
    np.testing.assert_array_equal(sp.superpixel_map(idx), reference_map(idx))


def test_local_archive_png_decodes_to_its_labels(archive: object) -> None:
    data = archive.data  # type: ignore[attr-defined]
    image_id = data.images[0]["_id"]
    rgb = np.asarray(iio.imread(data.superpixel_png(image_id)))
    idx = sp.decode(rgb)
    np.testing.assert_array_equal(idx, data.superpixel_index(image_id))
    np.testing.assert_array_equal(sp.superpixel_map(idx), reference_map(idx))


# ------------------------------------------------------------------ helpers
def test_pixels_paint_overlay_outlines_neighbours() -> None:
    idx = np.array([[0, 0, 1], [2, 2, 1], [2, 2, 1]], dtype=np.int32)
    image = np.full((3, 3, 3), 100, np.uint8)
    m = sp.superpixel_map(idx)
    assert sp.pixels(m, 2).tolist() == [3, 4, 6, 7]
    with pytest.raises(IndexError):
        sp.pixels(m, 3)
    painted = sp.paint(image, idx, [1], color="red", alpha=1.0)
    assert painted[:, 2].tolist() == [[255, 0, 0]] * 3 and painted[0, 0].tolist() == [100, 100, 100]
    half = sp.overlay(image, idx, [0.0, 0.0, 1.0], color=(200, 200, 200), alpha=0.5)
    assert half[1, 0].tolist() == [150, 150, 150] and half[0, 0].tolist() == [100, 100, 100]
    assert image[0, 0].tolist() == [100, 100, 100]  # input untouched
    edges = sp.outlines(idx)
    assert edges.dtype == bool and edges[0, 0] and not edges[2, 0]
    assert sp.neighbours(idx, 0) == {1, 2}
    assert sp.neighbours(idx)[1] == {0, 2}
    with pytest.raises(ValueError):
        sp.overlay(image, idx[:2], [1.0])
    with pytest.raises(ValueError):
        sp.paint(image, idx, [0], color="chartreuse-ish")


def test_local_slic_superpixels_for_v2_images(tmp_path) -> None:
    pytest.importorskip("skimage")
    from isicarchive import IsicApi
    from isicarchive.testing import LocalArchive

    with LocalArchive(seed=6) as server:
        api = IsicApi(hostname=server.url, api_version=2, cache_folder=tmp_path, progress=False)
        image = api.image("ISIC_0000000")
        image.compute_superpixels(n_segments=200)
        idx = image.superpixels["idx"]
        labels = np.unique(idx)
        assert idx.shape == (120, 160) and idx.dtype == np.int32
        assert labels[0] == 0 and labels[-1] == labels.size - 1 and 50 < labels.size < 400
        from isicarchive.cache import shard_of

        png = tmp_path / shard_of(image.id) / f"spimg_{image.id}.png"
        np.testing.assert_array_equal(sp.decode(np.asarray(iio.imread(png))), idx)
        twin = type(image)(image.as_json(), api)
        twin.load_superpixels()  # from the cache, no archive superpixels needed
        np.testing.assert_array_equal(twin.superpixels["idx"], idx)
