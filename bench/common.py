"""What the benchmarks share: their start-up as scripts, and how a table shows a number.

Run as a script (``python bench/latency.py``), a benchmark has bench/ as
``sys.path[0]``, not the repository root that its imports (``lab``,
``protocol``, ``bench``) are relative to. So each starts with::

    if __package__ in (None, ""):
        import common  # noqa: F401  # puts the repository root on sys.path

and this module, imported under that bare name, puts the root there instead,
as server/server.py does for itself; ``PYTHONPATH=.`` is then optional.
Imported as ``bench.common`` it changes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

if __name__ == "common":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

#: What a table shows where nothing was measured.
MISSING = "—"


def number(value: Optional[float], digits: int) -> str:
    """``value`` with ``digits`` decimals, or :data:`MISSING`."""
    return MISSING if value is None else f"{value:.{digits}f}"
