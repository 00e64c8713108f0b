"""``isicarchive demo``: the library's main job end to end, offline, in well under a minute.

A local archive starts in-process; the demo builds the image cache (with a
progress bar), selects images, caches a study's images and superpixels,
loads its annotations, maps one image's superpixels, saves a feature overlay
as a PNG, and says what it did and where the files are.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(out: str | Path = "isicarchive-demo", images: int = 400) -> dict:
    """Run the demo; returns a summary dict (also printed)."""
    from .api import IsicApi
    from .testing import ArchiveConfig, LocalArchive

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict = {}
    def say(text: str) -> None:
        print(text, flush=True)

    with LocalArchive(seed=7, config=ArchiveConfig(images=images, image_size=(320, 240), study_images=8)) as archive:
        say(f"1. Local ISIC archive running at {archive.url} ({images} images, v1 and v2 APIs)")
        cache = out / "cache"
        api = IsicApi(hostname=archive.url, cache_folder=cache)
        say(f"2. {api!r}")
        records = api.cache_images()
        say(f"3. Image cache: {len(records)} image records -> {cache}/0/imcache_{'0' * 24}.json.gz")
        selection = api.select_images([["meta.clinical.diagnosis", "==", "melanoma"],
                                       ["meta.clinical.age_approx", ">=", 50]])
        say(f"4. Selected melanomas in patients aged 50+: {len(selection)} images "
            f"({', '.join(selection.names()[:4])}{', ...' if len(selection) > 4 else ''})")
        study = api.study("ISIC Annotation Study 0")
        result = study.cache_imagedata()
        say(f"5. Study {study.name!r}: {len(study.images)} images; cached images + superpixels: {result!r}")
        annotations = study.load_annotations()
        say(f"6. Loaded {len(annotations)} annotations; features marked: {study.loaded_features}")
        marked = next(a for a in annotations if a.features)
        image = api.image(str(marked.image_id))
        image.load_imagedata()
        image.load_superpixels()
        image.map_superpixels()
        sp_map = image.superpixels["map"]
        height, width = image.superpixels["shp"]
        say(f"7. {image.name}: {width}x{height} pixels, "
            f"{sp_map.shape[0]} superpixels mapped (largest has {sp_map[:, -1].max()} pixels)")
        feature = next(iter(marked.features))
        overlay_path = out / f"{image.name}_overlay.png"
        marked.overlay(feature, filename=str(overlay_path), outlines=True)
        say(f"8. Overlay of feature {feature!r} saved to {overlay_path}")
        summary = {"archive": archive.url, "records": len(records), "selected": len(selection),
                   "study_images": len(study.images), "annotations": len(annotations),
                   "overlay": str(overlay_path), "cache": str(cache), "requests": api.request_count,
                   "seconds": round(time.monotonic() - started, 1)}
    say(f"Done in {summary['seconds']} s with {summary['requests']} HTTP requests. "
        f"Files: {out} (cache in {cache}, overlay {overlay_path.name}).")
    return summary
