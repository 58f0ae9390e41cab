"""Record a notebook's headline figures for the benchmarks (a no-op unless ALIGNLAB_RECORD names a file).

``benchmarks/run_all.py`` runs every notebook with ``ALIGNLAB_RECORD`` set and
collects what the notebooks recorded, so README's teaching figures come from
the notebooks' own runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def record(key: str, value) -> None:
    """Add ``key: value`` (a number, string or small list) to the JSON file named by ALIGNLAB_RECORD."""
    target = os.environ.get("ALIGNLAB_RECORD")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text()) if path.exists() else {}
    if hasattr(value, "item"):
        value = value.item()
    data[key] = value
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
