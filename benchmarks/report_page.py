"""Report page time: it grows with the samples shown, not with the size of the builds.

Prints, side by side in one run, the best wall time of `report_html.write_page` for one JPEG
q5 build of photos 500x375:
  - a small build (32 photos) and a build 16x larger (512), showing the same 4 samples;
  - the large build showing 4 samples spread over all its shards (every shard's tar
    headers indexed, 4 samples decoded);
  - 1 sample against 4 samples, on the small build.
Target: large/small at 4 samples <= 1.5; spread/small <= 2.

    python benchmarks/report_page.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_seconds, build_photo_shards, make_photo_folder  # noqa: E402

from lossyds.report_html import build_view, write_page  # noqa: E402
from lossyds.report_samples import first_keys  # noqa: E402


def page_seconds(build: Path, keys: list[str], out: Path) -> float:
    view = build_view(build)
    return best_seconds(lambda: write_page(out, [view], keys=keys), repeat=3)


def all_keys(build: Path) -> list[str]:
    """Every key of a build, shard by shard (for picking spread samples; not timed)."""
    from lossyds.shards.mapped import MappedShard

    manifest = json.loads((build / "manifest.json").read_text())
    keys = []
    for shard in manifest["shards"]:
        with MappedShard(build / shard["path"]) as mapped:
            keys += [entry.key for entry in mapped.entries]
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=32, help="photos in the small build")
    parser.add_argument("--large", type=int, default=512, help="photos in the large build")
    parser.add_argument("--no-check", action="store_true", help="exit 0 whatever the ratios (smoke runs)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the photos and builds go (a temporary folder)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        root = Path(folder)
        builds = {}
        for name, count in (("small", args.small), ("large", args.large)):
            source = make_photo_folder(root / f"photos-{name}", count)
            builds[name] = root / f"jpeg-{name}"
            build_photo_shards(source, builds[name], "jpeg", 5, shard_samples=16)
        near = first_keys(builds["small"], json.loads((builds["small"] / "manifest.json").read_text()))[:4]
        everywhere = all_keys(builds["large"])
        spread = [everywhere[round(i * (len(everywhere) - 1) / 3)] for i in range(4)]
        small = page_seconds(builds["small"], near, root / "page-small")
        large = page_seconds(builds["large"], near, root / "page-large")
        spread_seconds = page_seconds(builds["large"], spread, root / "page-spread")
        one = page_seconds(builds["small"], near[:1], root / "page-one")
    print(f"page, 4 samples: large ({args.large} photos) / small ({args.small}): {large / small:.2f}")
    print(f"page, 4 samples spread over every shard of the large build / small: {spread_seconds / small:.2f}")
    print(f"page on the small build, 4 samples / 1 sample: {small / one:.2f}")
    missed = large / small > 1.5 or spread_seconds / small > 2
    print("target (large/small <= 1.5, spread/small <= 2):", "missed" if missed else "met")
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
