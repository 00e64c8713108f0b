"""Local superpixels for images that have none in the archive (v2), with scikit-image SLIC.

The legacy archive computed its superpixels once per image with SLIC (about
1000 segments, compactness 0.01, sigma 2, max_iter 10, SLIC-zero) and packed
the labels into the RGB channels of a PNG.  :func:`compute_superpixels` does
the same locally; install the extra with ``pip install 'isicarchive[slic]'``.
The result is not identical to the archive's (SLIC versions differ), but it
has the same encoding, label range 0..n-1 and patch count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compute_superpixels"]


def compute_superpixels(image: np.ndarray, n_segments: int = 1000, **options: Any) -> np.ndarray:
    """Superpixel labels (``int32``, 0..n-1, every label present) for an RGB image.

    Raises
    ------
    ImportError
        When scikit-image is not installed (the ``slic`` extra).
    """
    try:
        from skimage.segmentation import slic
    except ImportError as exc:
        raise ImportError("local superpixels need scikit-image: pip install 'isicarchive[slic]'") from exc
    params = {"n_segments": n_segments, "compactness": 0.01, "sigma": 2, "max_num_iter": 10,
              "slic_zero": True, "start_label": 0, "channel_axis": -1}
    params.update(options)
    labels = slic(np.asarray(image)[..., :3], **params)
    # relabel to 0..n-1 in order of first appearance (row-major), as the archive's were
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size, dtype=np.int32)
    return rank[inverse].reshape(labels.shape)
