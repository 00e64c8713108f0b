"""Paint every feature marked in a study's annotations on its images (PNG files).

    python examples/study_overlays.py [--host URL] [--out DIR]
"""

from pathlib import Path

from _archive import archive_url

from isicarchive import IsicApi

with archive_url(__doc__) as (url, args):
    api = IsicApi(hostname=url, api_version=1, cache_folder=Path(args.out) / "cache")  # studies: the legacy API
    study = api.study(api.study()[0]["_id"])
    study.cache_imagedata()
    out = Path(args.out) / "overlays"
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for annotation in study.load_annotations():
        for feature in annotation.features:
            safe = feature.replace("/", "-").replace(" ", "")
            annotation.overlay(feature, filename=str(out / f"{annotation.id}_{safe}.png"), outlines=True)
            written += 1
    print(f"{written} overlays of study {study.name!r} in {out}")
