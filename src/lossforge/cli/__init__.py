"""The ``lossforge`` command: ``compare``, ``plot``, ``list`` and ``bench``.

Entry point: ``main(argv) -> int`` (the console script and ``python -m lossforge``). This module
imports the standard library only: ``--help`` and argument errors are answered before torch or
any subcommand module is imported, and each subcommand imports what it needs (torch, numpy,
scikit-learn, matplotlib, tqdm from the ``lossforge[cli]`` extra) when it runs, so
``import lossforge`` never does.

User mistakes (unknown loss, bad parameter value, unreadable data file, bad experiment key) end
with one line ``lossforge: error: ...`` on stderr and exit code 2, never a traceback. Set
``LOSSFORGE_TRACEBACK=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from lossforge.cli._deps import require

__all__ = ["EXIT_USAGE", "build_parser", "main", "require"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line (``<prog>: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """As ``ArgumentParser.parse_args``, except that arguments no command knows are reported
        by that command's parser (``lossforge compare: error: unrecognized arguments ...``,
        pointing at ``lossforge compare --help``), not by the top-level one."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._command_parser(getattr(parsed, "command", None))
            (command or self).error("unrecognized arguments: " + " ".join(extras))
        return parsed

    def _command_parser(self, name: object) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and isinstance(name, str):
                found = action.choices.get(name)
                return found if isinstance(found, argparse.ArgumentParser) else None
        return None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _file_stem(text: str) -> str:
    """A file name stem: no folder part (``--out`` says where), not empty, not ``.`` / ``..``."""
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"expected a plain file name without a folder (use --out for the folder), got {text!r}"
        )
    return text


#: The most grid points ``plot`` draws: far more than a curve of a few hundred pixels can show,
#: and a few MB per curve (an unbounded value could exhaust the machine's memory).
MAX_PLOT_POINTS = 100_000


def _plot_points(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_PLOT_POINTS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_PLOT_POINTS} grid points, got {text!r}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="train a small head with each loss on real data and compare the losses",
        description=(
            "Train a linear or small MLP head with each loss over several seeds and report each\n"
            "loss as a paired difference to the task's baseline (cross-entropy / BCE) with a 95 %\n"
            "interval; write results.json and compare.png to an output folder.\n\n"
            "With no arguments: scikit-learn's bundled digits as a long-tailed single-label task\n"
            "(imbalance ratios 10 and 100) and a multi-label 3x3 mosaic task (90 labels, ~2 %\n"
            "positive). With --data: your own features (.npz with X and y, or .csv).\n\n"
            "Protocol (docs/cli.md says why): AdamW with a constant learning rate and decoupled\n"
            "weight decay on the weights (none on biases); a budget in optimiser steps at which\n"
            "the default losses fit their training split (the report names any that does not);\n"
            "every run continued to twice the budget to report what that changes."
        ),
        epilog=(
            "examples:\n"
            "  lossforge compare\n"
            "  lossforge compare --data feats.npz --model linear\n"
            "  lossforge compare --data table.csv --label-column species --drop-columns id\n"
            "  lossforge compare --config examples/experiment.toml\n"
            "  lossforge compare --task long-tail --loss cross_entropy --loss softmax_focal:gamma=1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", metavar="TOML", help="experiment file (losses, data, model, train, seeds)"
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="FILE",
        help="your data: .npz with arrays X, y (indices or multi-hot) or .csv",
    )
    data.add_argument(
        "--task",
        choices=("all", "long-tail", "multi-label"),
        help="built-in digits tasks to run (default: all)",
    )
    data.add_argument(
        "--label-column",
        metavar="COL[,COL...]",
        help=(
            "CSV label column (default: 'label', 'y', 'target', 'class', else the last, said in "
            "the output); several columns = multi-hot labels"
        ),
    )
    data.add_argument(
        "--drop-columns",
        metavar="COL[,COL...]",
        help="CSV columns that are neither label nor feature (ids, text)",
    )
    data.add_argument(
        "--ignore-label",
        metavar="VALUE",
        help=(
            "single-label data: drop the rows with this label ('' = empty cells), or 'none' to "
            "keep every value as a class (default: refuse empty labels and a negative label "
            "beside 0, 1, ...)"
        ),
    )
    data.add_argument(
        "--imbalance-ratios",
        type=_float_list,
        metavar="R,R,...",
        help="long-tailed ratios (default: 10,100)",
    )
    data.add_argument(
        "--test-size",
        type=float,
        metavar="F",
        help="held-out fraction of your data (default: 0.25)",
    )
    p.add_argument(
        "--loss",
        action="append",
        metavar="NAME[:K=V,...]",
        help="a loss to compare (repeatable; the first of a task kind is the baseline), e.g. "
        "'sigmoid_focal:gamma=1,alpha=none'; class_counts=from_train uses the training counts; "
        'class_weight={from_train="drw",start=0.8} weighs every class 1 until 80%% of the '
        "budget, then by DRW's effective-number weights (LDAM-DRW); "
        "label=TEXT names the row (default: a standard set per task)",
    )
    train = p.add_argument_group("model and training")
    train.add_argument(
        "--model", choices=("linear", "mlp"), help="head trained on the features (default: mlp)"
    )
    train.add_argument(
        "--hidden", type=_positive_int, metavar="N", help="MLP hidden width (default: 128)"
    )
    train.add_argument(
        "--steps",
        type=_positive_int,
        metavar="N",
        help="budget in optimiser steps (default: per task, see docs/cli.md)",
    )
    train.add_argument(
        "--no-budget-check",
        action="store_true",
        help="skip the check at twice the budget (halves the run time)",
    )
    train.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="mini-batch size (default: 64)"
    )
    train.add_argument(
        "--lr", type=_positive_float, metavar="LR", help="AdamW learning rate (default: 0.01)"
    )
    train.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        metavar="WD",
        help="AdamW decoupled weight decay on the weights (default: 0.002)",
    )
    train.add_argument(
        "--seeds", type=_positive_int, metavar="N", help="number of seeds 0..N-1 (default: 5)"
    )
    run = p.add_argument_group("output and execution")
    run.add_argument(
        "--out", metavar="DIR", help="output folder (default: ./lossforge-out/compare-<timestamp>)"
    )
    run.add_argument("--no-plot", action="store_true", help="do not draw compare.png")
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (default: a bar on a terminal, else one line per finished job)",
    )
    run.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="worker processes for the jobs (a task's seeds, or a group of them; default: "
        "the CPUs, at most 8)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="torch intra-op threads per process (default: 1; the heads are tiny)",
    )
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: tiny run


def _add_plot(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a loss and its gradient against the true-class probability",
        description=(
            "Draw the loss and d loss / d logit (torch.autograd.grad on a 1-D grid) against the "
            "predicted probability of the true class p_t, one curve per parameter value (Fig. 1 "
            "of the focal loss paper). Sigmoid losses show the positive (target 1) and negative "
            "(target 0) branches separately; softmax losses use a 2-class logit pair; regression "
            "losses use the prediction error as the x-axis. Writes a PNG."
        ),
        epilog=(
            "examples:\n"
            "  lossforge plot sigmoid_focal --param gamma=0,0.5,1,2,5\n"
            "  lossforge plot asymmetric --param gamma_neg=0,2,4 --out asl.png\n"
            "  lossforge plot smooth_l1 --param beta=0.5,1,2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("loss", help="registry name (see 'lossforge list')")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=V1,V2,...",
        help=(
            "parameter values to sweep (repeatable; several sweeps are crossed); one value = fixed"
        ),
    )
    p.add_argument(
        "--out", metavar="FILE", help="PNG path (default: ./lossforge-out/plot-<loss>.png)"
    )
    p.add_argument(
        "--points",
        type=_plot_points,
        default=400,
        metavar="N",
        help=f"grid points, 1-{MAX_PLOT_POINTS} (default: 400)",
    )


def _add_list(sub: Any) -> None:
    p = sub.add_parser(
        "list",
        help="print every registered loss with its parameters and defaults",
        description=(
            "Print every loss of lossforge.registry with its constructor parameters and defaults."
        ),
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_bench(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="time and measure forward+backward of lossforge losses against eager references",
        description=(
            "Time forward+backward of lossforge losses against the eager formulas users run\n"
            "today (torchvision-style focal, the ASL repository's loss, smp-style dice,\n"
            "F.binary_cross_entropy_with_logits, F.cross_entropy, F.smooth_l1_loss, ...) and\n"
            "measure the peak extra memory of one separate, untimed forward+backward (CUDA:\n"
            "torch.cuda.max_memory_allocated; CPU: the allocator events of torch.profiler), as\n"
            "MB, bytes per logit and ratio to the reference.\n\n"
            "One table of small CPU-friendly workloads, the providers of each timed in\n"
            "interleaved rounds (speed-up: median and quartiles of the per-round ratios);\n"
            "lossforge's functional with backend='torch' (CPU: also with value checks off;\n"
            "CUDA: also the triton kernels), and its module. The full benchmark protocol of the\n"
            "design (docs/design.md: DET, SEG, ML-L, LLM, ML-S, REG with CUDA events,\n"
            "roofline, torch.compile and Liger references) is not part of the installed\n"
            "package: from a repository checkout run\n"
            "`python -m benchmarks.run --help`."
        ),
        epilog=(
            "examples:\n"
            "  lossforge bench                                   # quick table, ~20 s on 2 cores\n"
            "  lossforge bench --workloads focal-dense --scale 4 --out bench-out\n"
            "  lossforge bench --aa --min-run-time 2             # with each reference's A/A row\n"
            "  lossforge bench --heap reuse --aa                 # CPU heap as in a training run\n"
            "  lossforge bench --list\n"
            "  python -m benchmarks.run --only DET,SEG   # the full protocol, from a checkout"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suite",
        choices=("quick", "protocol"),
        default="quick",
        help="quick (the only one installed); 'protocol' moved: python -m benchmarks.run",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if present"
    )
    p.add_argument(
        "--workloads",
        "--only",
        dest="workloads",
        metavar="NAME[,NAME]",
        help="subset of the suite's workloads (see --list)",
    )
    p.add_argument("--list", action="store_true", help="list the suite's workloads and exit")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write <stem>.json, .csv and .md here (only when given)",
    )
    p.add_argument(
        "--stem",
        type=_file_stem,
        metavar="NAME",
        help="file name stem, a plain name without a folder (default: bench)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch threads (default: min(4, CPUs))",
    )
    quick = p.add_argument_group("quick suite")
    quick.add_argument(
        "--scale", type=_positive_float, metavar="S", help="multiply the batch sizes (default: 1)"
    )
    quick.add_argument(
        "--min-run-time",
        type=_positive_float,
        metavar="SEC",
        help="seconds of the reference's timed blocks per workload; the providers are timed in "
        "interleaved rounds, at least 5 (default: 0.3)",
    )
    quick.add_argument(
        "--aa",
        action="store_true",
        help="time each workload's reference twice (a row '<reference> (A/A)'): the ratio of "
        "the two is the run's noise band, against which the other ratios can be read",
    )
    quick.add_argument(
        "--heap",
        choices=("as-is", "reuse"),
        default="as-is",
        help="CPU allocator state (glibc): 'reuse' fixes malloc's mmap threshold at 32 MiB and "
        "its trim threshold at 1 GiB, so freed temporaries are reused from the heap as in a "
        "long-running training process, instead of the small process's own dynamic state, in "
        "which a temporary may come fresh from the kernel (page faults) on every call "
        "(default: as-is)",
    )
    protocol = p.add_argument_group(
        "moved to the repository (python -m benchmarks.run): these now only say so"
    )
    protocol.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes on the CPU, eager vs backend='torch' (the default without CUDA)",
    )
    protocol.add_argument(
        "--reps", type=_positive_int, metavar="N", help="timed reps (default: 20 CUDA, 3 CPU)"
    )
    protocol.add_argument(
        "--iters",
        type=_positive_int,
        metavar="N",
        help="back-to-back fwd+bwd per timed rep (default: 5 CUDA, 1 CPU)",
    )
    protocol.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile reference"
    )
    protocol.add_argument("--no-launches", action="store_true", help="skip the kernel launch count")


class _Version(argparse.Action):
    """``--version``, importing lossforge's version only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from lossforge import __version__

        parser.exit(0, f"lossforge {__version__}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``lossforge`` argument parser with its four subcommands."""
    parser = _Parser(
        prog="lossforge",
        description="lossforge: compare, plot, list and benchmark loss functions.",
        epilog="run 'lossforge <command> --help' for the options of a command",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(
        dest="command", metavar="command", required=True, parser_class=_Parser
    )
    _add_compare(sub)
    _add_plot(sub)
    _add_list(sub)
    _add_bench(sub)
    return parser


def _dispatch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "list":
        from lossforge.cli.listing import run_list

        return run_list(args)
    if args.command == "bench":  # torch only: runs where the [cli] extra is not installed
        from lossforge.cli.bench import run_bench

        return run_bench(args)
    require("numpy", f"lossforge {args.command}")
    if args.command == "compare":
        from lossforge.cli.compare import run_compare_command

        return run_compare_command(args, argv)
    from lossforge.cli.plot import run_plot

    return run_plot(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lossforge`` command.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for a usage or input error, 130 when interrupted.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as stop:  # --help, --version, usage errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_USAGE)

    import torch

    from lossforge._checks import OptionalDependencyError

    threads = torch.get_num_threads()
    wanted = getattr(args, "threads", None) or min(4, os.cpu_count() or 1)
    torch.set_num_threads(max(1, wanted))
    try:
        return _dispatch(args, args_list)
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 141
    except KeyboardInterrupt:
        print("lossforge: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, OptionalDependencyError) as err:
        if os.environ.get("LOSSFORGE_TRACEBACK"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"lossforge: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        torch.set_num_threads(threads)
