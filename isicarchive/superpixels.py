"""Superpixel arithmetic: pure numpy, no I/O.

The archive stores an image's superpixels as an RGB PNG in which each pixel's
label is ``R + 256*G + 65536*B``.  This module turns that into

* the **index** array (2-D ``int32``, one label per pixel),
* the padded **map** of the original package: ``int32`` of shape
  ``(max_label + 1, max_count + 1)`` whose row ``i`` lists, ascending, the
  flat C-order pixel indices of label ``i`` in ``map[i, :map[i, -1]]``, with
  the pixel count in the last column and zeros elsewhere,
* a **compact** (CSR-like) form: ``order`` (pixel indices grouped by label,
  ascending within a label) plus ``offsets`` (``offsets[i]:offsets[i+1]``
  is label ``i``'s slice) for callers who do not want the padded array,

and offers the helpers people reach for: one superpixel's pixels, painting,
outlines, neighbours and feature overlays.

All of it is linear in the number of pixels.  Superpixels are compact, so
the flat image is a sequence of runs of equal labels about 25 times shorter
than the pixel list; the runs are sorted by label (numpy's radix sort for
labels below 65536) and expanded in one vectorised pass, which replaces the
original per-pixel loop.  Random label images with no runs fall back to a
stable argsort of the pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ._lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy", globals(), "np")  # imported on first use (see ._lazy)


__all__ = [
    "Compact",
    "compact",
    "decode",
    "encode",
    "map_from_compact",
    "neighbours",
    "outlines",
    "overlay",
    "paint",
    "pixels",
    "superpixel_map",
]

# Labels below this fit uint16, for which numpy's stable argsort is a radix sort.
_RADIX_LIMIT = 1 << 16
# Above this many labels, one vectorised scatter beats a Python loop of row copies.
_ROW_LOOP_LIMIT = 50_000


class Compact(NamedTuple):
    """Superpixels in compressed form.

    Attributes
    ----------
    order : numpy.ndarray
        Flat pixel indices (``int32`` or ``int64``) grouped by label, ascending
        within each label.
    offsets : numpy.ndarray
        ``int64`` array of length ``n_labels + 1``; label ``i`` owns
        ``order[offsets[i]:offsets[i + 1]]``.
    shape : tuple of int
        Shape of the index image the pixel indices refer to.
    """

    order: np.ndarray
    offsets: np.ndarray
    shape: tuple

    @property
    def counts(self) -> np.ndarray:
        """Pixel count per label."""
        return np.diff(self.offsets)

    def pixels(self, label: int) -> np.ndarray:
        """Flat pixel indices of ``label`` (a view, ascending)."""
        return self.order[self.offsets[label]:self.offsets[label + 1]]


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(
            f"a superpixel image must be an RGB(A) array of shape (rows, cols, 3); got shape {rgb.shape}"
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("a superpixel image must not be empty")
    if rgb.dtype != np.uint8:
        if not np.issubdtype(rgb.dtype, np.integer) or rgb.min() < 0 or rgb.max() > 255:
            raise ValueError(f"a superpixel image must hold 8-bit channel values; got dtype {rgb.dtype}")
    return rgb


def decode(rgb: np.ndarray) -> np.ndarray:
    """Decode an RGB superpixel image into its label (index) array.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(rows, cols, 3)`` (an alpha channel is ignored) of 8-bit values.

    Returns
    -------
    numpy.ndarray
        ``int32`` array of shape ``(rows, cols)``, label = R + 256·G + 65536·B
        (the original package's dtype; wide enough for every 24-bit label).

    Raises
    ------
    ValueError
        For an array that is not a non-empty RGB image.
    """
    rgb = np.ascontiguousarray(_check_rgb(rgb), dtype=np.uint8)
    rows, cols, channels = rgb.shape
    n = rows * cols
    out = np.empty(n, dtype=np.int32)
    if n > 1:
        # Read each pixel's R, G, B and the next byte as one little-endian
        # uint32 (an unaligned strided view, no copy) and drop the top byte:
        # a single pass instead of three shifted channel copies.
        packed: np.ndarray = np.ndarray((n - 1,), dtype="<u4", buffer=rgb, strides=(channels,))
        np.bitwise_and(packed, 0xFFFFFF, out=out[:-1], casting="unsafe")
    r, g, b = (int(v) for v in rgb[-1, -1, :3])
    out[-1] = r | g << 8 | b << 16
    return out.reshape(rows, cols)


def encode(idx: np.ndarray) -> np.ndarray:
    """Pack a label array into the archive's RGB encoding (``uint8``, 3 channels)."""
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.size == 0:
        raise ValueError(f"a superpixel index must be a non-empty 2-D array; got shape {idx.shape}")
    if idx.min() < 0 or idx.max() >= 1 << 24:
        raise ValueError("superpixel labels must lie in 0 .. 2**24 - 1")
    # a label's three low bytes, little-endian, are its R, G, B: one copy out of the labels' own bytes
    # (three masked and shifted channels made four temporaries the size of the labels)
    if idx.dtype == np.dtype("<i4"):
        lab = np.ascontiguousarray(idx).view("<u4")  # non-negative (checked above): the same bits
    else:
        lab = np.ascontiguousarray(idx, dtype="<u4")
    return lab.view(np.uint8).reshape(idx.shape + (4,))[:, :, :3].copy()


def _flat_labels(idx: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.size == 0:
        raise ValueError(f"a superpixel index must be a non-empty 2-D array; got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"a superpixel index must hold integer labels; got dtype {idx.dtype}")
    flat = idx.ravel()
    if flat.min() < 0:
        raise ValueError("superpixel labels must not be negative")
    return flat


def _sorted_by_label(flat: np.ndarray, n_labels: int) -> np.ndarray:
    """Pixel indices ordered by label, ascending within a label (stable sort)."""
    keys = flat.astype(np.uint16) if n_labels <= _RADIX_LIMIT else flat
    return np.argsort(keys, kind="stable").astype(_index_dtype(flat.size), copy=False)


def _index_dtype(n_pixels: int) -> type:
    return np.int32 if n_pixels <= np.iinfo(np.int32).max else np.int64


class _Runs(NamedTuple):
    """Maximal runs of equal labels along the flat image, ordered by label.

    Runs of one label keep their pixel order, so concatenating them label by
    label lists every label's pixels ascending.
    """

    starts: np.ndarray  # first flat pixel index of each run
    lengths: np.ndarray
    counts: np.ndarray  # pixels per label (index = label)


def _runs(flat: np.ndarray) -> _Runs | None:
    """Run-length layout of the labels, or None when runs are too short to pay.

    Superpixels are compact, so a row of pixels crosses only a few dozen of
    them: there are ~25x fewer runs than pixels, and sorting runs instead of
    pixels leaves one sequential pass to expand them.
    """
    n = flat.size
    breaks = np.flatnonzero(flat[1:] != flat[:-1])
    if breaks.size > n // 4:
        return None
    starts = np.empty(breaks.size + 1, np.int64)
    starts[0] = 0
    starts[1:] = breaks + 1
    lengths = np.diff(starts, append=n)
    labels = flat[starts]
    counts = np.bincount(labels, weights=lengths).astype(np.int64)
    keys = labels.astype(np.uint16) if counts.size <= _RADIX_LIMIT else labels
    by_label = np.argsort(keys, kind="stable")
    return _Runs(starts[by_label], lengths[by_label], counts)


def compact(idx: np.ndarray) -> Compact:
    """Compressed superpixel form: pixel order grouped by label, and offsets.

    Parameters
    ----------
    idx : numpy.ndarray
        2-D non-negative integer label array.

    Returns
    -------
    Compact
        ``order``, ``offsets`` and ``shape``; labels that never occur get an
        empty slice.
    """
    flat = _flat_labels(idx)
    runs = _runs(flat)
    counts = runs.counts if runs is not None else np.bincount(flat)
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if runs is None:
        order = _sorted_by_label(flat, counts.size)
    else:
        # Expand the sorted runs: position k of run r holds start[r] + (k - first position of r).
        dtype = _index_dtype(flat.size)
        placed_before = np.cumsum(runs.lengths) - runs.lengths
        order = np.repeat((runs.starts - placed_before).astype(dtype), runs.lengths)
        order += np.arange(flat.size, dtype=dtype)
    return Compact(order, offsets, tuple(np.shape(idx)))


def map_from_compact(comp: Compact) -> np.ndarray:
    """Expand a :class:`Compact` into the padded map (see :func:`superpixel_map`)."""
    counts = comp.counts
    spmap = np.zeros((counts.size, int(counts.max()) + 1), dtype=np.int32)
    order, offsets = comp.order, comp.offsets
    if counts.size <= _ROW_LOOP_LIMIT:
        starts = offsets.tolist()
        for label in np.flatnonzero(counts).tolist():
            start, stop = starts[label], starts[label + 1]
            spmap[label, : stop - start] = order[start:stop]
    else:
        width = spmap.shape[1]
        rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        dest = np.arange(order.size, dtype=np.int64) + rows * width - offsets[rows]
        spmap.ravel()[dest] = order
    spmap[:, -1] = counts
    return spmap


def superpixel_map(idx: np.ndarray) -> np.ndarray:
    """Map each superpixel to the flat pixel indices it covers.

    Parameters
    ----------
    idx : numpy.ndarray
        2-D non-negative integer label array (C order is assumed for the flat
        indices, as in the original package).

    Returns
    -------
    numpy.ndarray
        ``int32`` array of shape ``(max_label + 1, max_count + 1)``: row ``i``
        holds label ``i``'s ascending flat indices in ``[:count]`` and its
        count in ``[-1]``; unused cells are 0.
    """
    return map_from_compact(compact(idx))


def pixels(spmap: np.ndarray, label: int) -> np.ndarray:
    """Flat pixel indices of one superpixel from a padded map."""
    if not 0 <= label < spmap.shape[0]:
        raise IndexError(f"superpixel {label} does not exist (0 .. {spmap.shape[0] - 1})")
    return spmap[label, : spmap[label, -1]]


def _as_pixels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float copy of ``image`` as (n_pixels, channels), and the original."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3:
        raise ValueError(f"expected an image of shape (rows, cols[, channels]); got {image.shape}")
    return image.reshape(-1, image.shape[2]).astype(np.float32), image


def _colour(color: Sequence[float] | str, channels: int) -> np.ndarray:
    named = {
        "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
        "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255),
        "white": (255, 255, 255), "black": (0, 0, 0),
    }
    if isinstance(color, str):
        if color not in named:
            raise ValueError(f"unknown colour {color!r}; use an RGB triple or one of {sorted(named)}")
        color = named[color]
    rgb = np.asarray(color, dtype=np.float32).ravel()
    if rgb.size != 3:
        raise ValueError(f"a colour is an RGB triple; got {color!r}")
    return np.concatenate([rgb, np.full(channels - 3, 255, np.float32)]) if channels > 3 else rgb[:channels]


def paint(
    image: np.ndarray,
    idx: np.ndarray,
    labels: Iterable[int],
    color: Sequence[float] | str = (255, 0, 0),
    alpha: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Paint superpixels onto a copy of ``image``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(rows, cols, 3)`` image (grey images are expanded to RGB).
    idx : numpy.ndarray
        Label array of the same rows and cols.
    labels : iterable of int
        Superpixels to paint.
    color : RGB triple or colour name
    alpha : float or array
        Opacity in 0..1; an array gives one opacity per entry of ``labels``.

    Returns
    -------
    numpy.ndarray
        A new ``uint8`` image.
    """
    labels = np.asarray(list(labels), dtype=np.int64)
    n_labels = int(np.max(idx)) + 1
    weights = np.zeros(n_labels, dtype=np.float32)
    if labels.size:
        if int(np.min(labels)) < 0 or int(np.max(labels)) >= n_labels:
            raise IndexError(f"superpixel labels must lie in 0 .. {n_labels - 1}")
        weights[labels] = np.broadcast_to(np.asarray(alpha, dtype=np.float32), labels.shape)
    return overlay(image, idx, weights, color=color, alpha=1.0)


def overlay(
    image: np.ndarray,
    idx: np.ndarray,
    values: Sequence[float] | np.ndarray,
    color: Sequence[float] | str = (255, 0, 0),
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend per-superpixel values (e.g. an annotation's 0/0.5/1 markup) over an image.

    Each pixel is mixed with ``color`` by ``alpha * values[label]``.

    Returns
    -------
    numpy.ndarray
        A new ``uint8`` image of the same shape as ``image`` (RGB).
    """
    idx = np.asarray(idx)
    flat, original = _as_pixels(image)
    if original.shape[:2] != idx.shape:
        raise ValueError(f"image {original.shape[:2]} and superpixels {idx.shape} differ in size")
    shares: np.ndarray = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    if shares.size <= int(idx.max()):
        shares = np.concatenate([shares, np.zeros(int(idx.max()) + 1 - shares.size, np.float32)])
    weight = (shares[idx.ravel()] * np.float32(alpha))[:, None]
    painted = flat * (1 - weight) + _colour(color, flat.shape[1]) * weight
    return np.clip(np.rint(painted), 0, 255).astype(np.uint8).reshape(original.shape)


def outlines(idx: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels on a superpixel boundary (4-neighbourhood)."""
    idx = np.asarray(idx)
    edge = np.zeros(idx.shape, dtype=bool)
    vertical = idx[1:, :] != idx[:-1, :]
    horizontal = idx[:, 1:] != idx[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def neighbours(idx: np.ndarray, label: int | None = None) -> dict[int, set[int]] | set[int]:
    """Superpixels that touch each other (4-neighbourhood).

    Parameters
    ----------
    idx : numpy.ndarray
        Label array.
    label : int, optional
        When given, return only this superpixel's neighbours.

    Returns
    -------
    set of int, or dict of int to set of int
    """
    idx = np.asarray(idx)
    pairs = np.concatenate(
        [
            np.stack([idx[1:, :].ravel(), idx[:-1, :].ravel()], axis=1),
            np.stack([idx[:, 1:].ravel(), idx[:, :-1].ravel()], axis=1),
        ]
    ).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
    if label is not None:
        return set(pairs[pairs[:, 0] == label, 1].tolist())
    result: dict[int, set[int]] = {int(v): set() for v in np.unique(idx).tolist()}
    for a, b in pairs.tolist():
        result[a].add(b)
    return result
