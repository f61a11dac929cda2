"""What recording cost costs: fan-out and round trip before cost recording and now, in one run.

The core benchmark on the last revision whose controller recorded no cost and
on this checkout, alternating (``compare_revisions.py`` with that base).

    .venv/bin/python bench/cost_overhead.py              # 4 rounds of each
    .venv/bin/python bench/cost_overhead.py --rounds 6
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_revisions import main

BEFORE_COST = "a139190"
"""The last revision whose controller recorded no cost."""

if __name__ == "__main__":
    sys.exit(main(["--base", BEFORE_COST, *sys.argv[1:]]))
