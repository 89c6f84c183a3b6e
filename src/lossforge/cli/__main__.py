"""``python -m lossforge.cli``: the same as the ``lossforge`` console script."""

from __future__ import annotations

import sys

from lossforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
