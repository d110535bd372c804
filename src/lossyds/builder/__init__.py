"""Building datasets: `build(BuildOptions(...))`, `merge(OUT)`, and `--spec` grids (spec.py).

Read pipeline.py first: it runs the stages in order."""

from __future__ import annotations

from .build_options import BuildOptions
from .merge import merge
from .pipeline import build

__all__ = ["BuildOptions", "build", "merge"]
