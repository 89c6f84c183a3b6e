"""One-command loss benchmark (PERFORMANCE.md section 6), from a repository checkout.

    python -m benchmarks.run                 # every workload, GPU protocol (needs CUDA)
    python -m benchmarks.run --only DET,SEG  # a subset
    python -m benchmarks.run --smoke         # tiny CPU version (torch backend vs eager), seconds

A thin shim: the implementation ships with the package (``lossforge.cli.protocol``) and this is
``lossforge bench --suite protocol`` with the same flags (``--only``, ``--smoke``, ``--reps``,
``--iters``, ``--no-compile``, ``--no-launches``, ``--out``, ``--stem``; see
``lossforge bench --help``), except that results go to ``benchmarks/results/<stem>.{json,csv,md}``
unless ``--out`` says otherwise. It imports nothing outside the package besides torch, triton and
the optional liger_kernel.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lossforge bench --suite protocol`` with ``argv``; returns the exit code."""
    from lossforge.cli import main as lossforge_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(RESULTS)]
    return lossforge_main(["bench", "--suite", "protocol", *args])


if __name__ == "__main__":
    sys.exit(main())
