"""``isicarchive demo``: the library's main job end to end, offline, in well under a minute.

A local archive starts in-process.  With today's API (v2, the default) the
demo builds the image cache (with a progress bar), searches in the archive's
language, selects from the cached records and downloads a few images with
their metadata; then, with the legacy v1 API, it caches a study's images and
superpixels, loads its annotations, maps one image's superpixels and saves a
feature overlay as a PNG, saying what it did and where the files are.
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
        # today's API (v2), the default
        api = IsicApi(hostname=archive.url, cache_folder=out / "cache")
        say(f"2. {api!r} (API v{api.api_version}, today's)")
        records = api.cache_images()
        say(f"3. Image cache: {len(records)} image records, kept in {api.cache_folder}")
        query = 'diagnosis_1:Malignant AND age_approx:[50 TO *]'
        found = api.search_images(query)
        say(f"4. Search {query!r}: {len(found)} images ({', '.join(found.names()[:4])}"
            f"{', ...' if len(found) > 4 else ''})")
        selection = api.select_images([["metadata.clinical.diagnosis_3", "==", "Melanoma Invasive"]])
        say(f"5. Selected invasive melanomas from the cached records: {len(selection)} images")
        folder = out / "melanomas"
        downloaded = api.download_images(list(selection.values())[:5], folder=folder)
        say(f"6. Downloaded {downloaded.total} of them with metadata.csv into {folder}: {downloaded!r}")
        # the legacy v1 API: studies, annotations and the archive's superpixels live only there
        legacy = IsicApi(hostname=archive.url, api_version=1, cache_folder=out / "cache-v1")
        study = legacy.study("ISIC Annotation Study 0")
        result = study.cache_imagedata()
        say(f"7. Legacy v1: study {study.name!r}, {len(study.images)} images; cached images + superpixels: "
            f"{result!r}")
        annotations = study.load_annotations()
        say(f"8. Loaded {len(annotations)} annotations; features marked: {study.loaded_features}")
        marked = next(a for a in annotations if a.features)
        image = legacy.image(str(marked.image_id))
        image.load_imagedata()
        image.load_superpixels()
        image.map_superpixels()
        sp_map = image.superpixels["map"]
        height, width = image.superpixels["shp"]
        say(f"9. {image.name}: {width}x{height} pixels, "
            f"{sp_map.shape[0]} superpixels mapped (largest has {sp_map[:, -1].max()} pixels)")
        feature = next(iter(marked.features))
        overlay_path = out / f"{image.name}_overlay.png"
        marked.overlay(feature, filename=str(overlay_path), outlines=True)
        say(f"10. Overlay of feature {feature!r} saved to {overlay_path}")
        cache = out / "cache"
        summary = {"archive": archive.url, "records": len(records), "found": len(found), "selected": len(selection),
                   "downloaded": downloaded.total, "study_images": len(study.images),
                   "annotations": len(annotations), "overlay": str(overlay_path), "cache": str(cache),
                   "requests": api.request_count + legacy.request_count,
                   "seconds": round(time.monotonic() - started, 1)}
    say(f"Done in {summary['seconds']} s with {summary['requests']} HTTP requests. "
        f"Files: {out} (cache in {cache}, overlay {overlay_path.name}).")
    return summary
