"""Find every melanoma image over 2048 pixels wide and download it with its metadata.

    python examples/find_melanomas.py [--host URL] [--out DIR]
"""

from pathlib import Path

from _archive import archive_url

from isicarchive import IsicApi

with archive_url(__doc__) as (url, args):
    api = IsicApi(hostname=url)
    # the local archive's images are small: ask for >= 100 px there, 2048 on the real archive
    min_width = 100 if "127.0.0.1" in url else 2048
    selection = api.select_images([["meta.clinical.diagnosis", "==", "melanoma"],
                                   ["meta.acquisition.pixelsX", ">=", min_width]])
    print(f"{len(selection)} melanoma images at least {min_width} px wide")
    result = api.download_images(selection, folder=Path(args.out) / "melanomas")
    print(result)
    print("metadata:", Path(args.out) / "melanomas" / "metadata.csv")
