"""The benchmark protocol of PERFORMANCE.md section 6, from a repository checkout.

    python -m benchmarks.run                       # every workload, GPU protocol (needs CUDA)
    python -m benchmarks.run --only DET,SEG        # a subset
    python -m benchmarks.run --smoke               # tiny CPU version (torch backend vs eager)
    python -m benchmarks.run --cpu-scale 0.25      # the protocol's shapes on the CPU, batch / 4
    python -m benchmarks.run --only DET --stem h100-DET --out /tmp/results
    python -m benchmarks.run --list                # the workload ids
    python -m benchmarks.run --rows 'DET:bce:float32,LLM:ce_ls0' --compile-rows DET
                                                   # these rows, in this order (--list-rows)

Run it from the repository root (``-m`` puts the current folder on ``sys.path``). Results go to
``benchmarks/results/<stem>.{json,csv,md}`` unless ``--out`` says otherwise; ``<stem>`` defaults to
a timestamp on CUDA and ``smoke`` on the CPU. The implementation is ``benchmarks/protocol.py``; it
imports lossforge (installed, e.g. ``pip install -e .``) and, when present, triton and
liger_kernel. ``lossforge bench`` (the installed command) runs the quick suite only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PROG = "python -m benchmarks.run"
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:  # (also refuses nan)
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _patterns(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command line of the protocol."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "The benchmark protocol of PERFORMANCE.md section 6: workloads DET, SEG, ML-L, LLM,\n"
            "ML-S, REG; eager reference, torch.compile of it, Liger (LLM), lossforge torch and\n"
            "triton backends, interleaved in one process; CUDA events, fwd/bwd split, kernel\n"
            "launches, peak memory, roofline. Writes <stem>.json/.csv/.md after every row. On the\n"
            "CPU (--smoke, or no CUDA) tiny shapes, eager reference vs backend='torch' with value\n"
            "checks on and off; --cpu-scale S: the CPU table at the protocol's shapes, batch\n"
            "sizes times S (float32, no LLM row)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only",
        "--workloads",
        dest="only",
        metavar="ID[,ID]",
        help="subset of the workloads (see --list)",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument(
        "--rows",
        metavar="PAT[,PAT]",
        help="only the rows matching a pattern, in the patterns' order: WORKLOAD:loss:dtype:"
        "target:shape, each part exact, '*' or a prefix ending in '*', trailing parts optional "
        "(e.g. DET:sigmoid_focal_g2:float32:index; see --list-rows)",
    )
    p.add_argument("--skip-rows", metavar="PAT[,PAT]", help="leave out the rows matching these")
    p.add_argument(
        "--compile-rows",
        metavar="PAT[,PAT]",
        help="the torch.compile reference on these rows only (default: every row)",
    )
    p.add_argument(
        "--list-rows", action="store_true", help="list the row keys (with --smoke: the CPU rows)"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes on the CPU, eager vs backend='torch' (the default without CUDA)",
    )
    p.add_argument(
        "--cpu-scale",
        type=_scale,
        metavar="S",
        help="the CPU table of the protocol's shapes (PERFORMANCE.md: the torch backend against "
        "the eager reference on the CPU) with the large rows' batch sizes (DET, the 4096-image "
        "ML-L row, SEG, REG) times S in (0, 1]; float32, no LLM row; reps default 7",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=str(RESULTS),
        help="write <stem>.json, .csv and .md here (default: benchmarks/results)",
    )
    p.add_argument(
        "--stem",
        metavar="NAME",
        help="file name stem (default: a timestamp on CUDA, smoke on CPU, cpu-scale<S> with "
        "--cpu-scale)",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present"
    )
    p.add_argument(
        "--reps",
        type=_positive_int,
        metavar="N",
        help="timed reps (20 CUDA, 3 CPU smoke, 7 --cpu-scale)",
    )
    p.add_argument(
        "--iters",
        type=_positive_int,
        metavar="N",
        help="back-to-back fwd+bwd per timed rep (default: 5 CUDA, 1 CPU)",
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference")
    p.add_argument("--no-launches", action="store_true", help="skip the kernel launch count")
    p.add_argument(
        "--threads", type=_positive_int, metavar="N", help="torch threads (default on the CPU: 1)"
    )
    return p


def _run(args: argparse.Namespace) -> int:
    import torch

    from benchmarks.protocol import (
        PROTOCOL_WORKLOADS,
        row_key,
        run_protocol,
        select_rows,
        select_workloads,
        workloads,
        write,
    )
    from lossforge.cli.bench import output_dir, resolve_device

    only = select_workloads(args.only)
    if args.list:
        for name, what in PROTOCOL_WORKLOADS.items():
            print(f"{name:<6} {what}")
        return 0
    rows, skip = _patterns(args.rows), _patterns(args.skip_rows)
    compile_rows = _patterns(args.compile_rows)
    if args.smoke and args.cpu_scale is not None:
        raise ValueError("--smoke and --cpu-scale are two CPU shape sets: give one")
    if args.list_rows:  # the rows are built lazily: listing them allocates nothing
        for row in select_rows(
            workloads("meta", args.smoke, scale=args.cpu_scale), only, rows, skip
        ):
            print(row_key(row))
        return 0
    cpu_only = "--smoke" if args.smoke else "--cpu-scale" if args.cpu_scale is not None else None
    if cpu_only and args.device == "cuda":
        raise ValueError(f"{cpu_only} runs on the CPU; drop --device cuda")
    dev = "cpu" if cpu_only else resolve_device(args.device).type
    stem = args.stem or (
        time.strftime("%Y%m%d-%H%M%S")
        if dev == "cuda"
        else "smoke"
        if args.cpu_scale is None
        else f"cpu-scale{args.cpu_scale:g}"
    )
    out_dir = output_dir(args.out)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif dev == "cpu" and args.cpu_scale is None:
        torch.set_num_threads(1)  # the tiny smoke shapes run faster on one thread of a small box
    try:
        out = run_protocol(
            dev,
            only=only,
            reps=args.reps,
            iters=args.iters,
            compile_ref=not args.no_compile,
            count_launches=not args.no_launches,
            # Rewritten after every row, so a run cut short by a time limit keeps its results.
            on_row=lambda partial: write(partial, out_dir, stem),
            rows=rows,
            skip_rows=skip,
            compile_rows=compile_rows,
            scale=args.cpu_scale,
        )
    finally:
        torch.set_num_threads(threads)
    for path in write(out, out_dir, stem):
        print("wrote", path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the protocol with ``argv`` (default ``sys.argv[1:]``); returns the exit code (0, or 2
    for a usage error: unknown workload, ``--smoke`` with ``--device cuda``, no CUDA for
    ``--device cuda``, an output folder that cannot be created)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:  # --help, usage errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_USAGE)
    try:
        return _run(args)
    except (ValueError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
