"""Where the real archive fixtures live (beside the repository, never inside it)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
IMCACHE_DUMP = SHARED / "imcache_000000000000000000000000.json.gz"
SGCACHE_DUMP = SHARED / "sgcache_000000000000000000000000.json.gz"
DEMO_PNG = SHARED / "ISIC_0000000_superpixels_demo.png"
