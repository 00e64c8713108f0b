"""Export image metadata to a pandas DataFrame and a CSV file (needs the pandas extra).

    python examples/export_metadata.py [--host URL] [--out DIR]
"""

from pathlib import Path

from _archive import archive_url

from isicarchive import IsicApi

with archive_url(__doc__) as (url, args):
    api = IsicApi(hostname=url)
    # today's (v2) field names; the original's meta.acquisition.image_type works too
    selection = api.select_images(["metadata.acquisition.image_type", "==", "dermoscopic"])
    frame = selection.to_dataframe()  # v2 columns: patient_id, lesion_id, diagnosis_1..5, ...
    print(frame.groupby("diagnosis_1").size().sort_values(ascending=False).head())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    target = Path(args.out) / "metadata.csv"
    frame.to_csv(target)
    print(f"{len(frame)} rows written to {target}")
