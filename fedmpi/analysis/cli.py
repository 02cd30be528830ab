"""`python -m fedmpi analyze`: the command line; each job it does lives in its own module.

- fedmpi.analysis.summary: the summary of one trace, the comparison of several.
- fedmpi.analysis.tables: every per-row metric as long-format CSV.
- fedmpi.analysis.plots: the figures of Adilova et al. (2019), accuracy, information plane.
- fedmpi.analysis.reestimate: MI re-estimated from logged activations.
- fedmpi.analysis.board: a trace as TensorBoard scalars.

Traces are read through fedmpi.trace, so a trace that is still being written
or was cut off by a crash reads up to its last complete row. Bad input
raises UsageError: one line, exit 2. Importing this module is cheap: h5py,
numpy, rich and matplotlib are imported where they are used; mpi4py and
torch never are. See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from fedmpi.errors import UsageError

DESCRIPTION = """\
Summarise fedmpi traces (HDF5, see docs/trace-format.md), draw the figures of
Adilova et al. (2019), export per-round metrics as CSV, or re-estimate mutual
information from the logged activations. Works on finished traces, on traces
still being written, and on traces cut off by a crash (up to the last complete
round). Without --plots, --csv or --estimator it prints a summary: one table
per trace, or one comparison table (a row per trace) for several.

examples:
  python -m fedmpi analyze runs/default.h5
  python -m fedmpi analyze runs/iid.h5 runs/noniid.h5 --plots figures/
  python -m fedmpi analyze runs/default.h5 --csv metrics.csv
  python -m fedmpi analyze runs/default.h5 --estimator ksg --param k=5 --write
"""


def add_parser(subparsers) -> None:
    """Add the `analyze` subcommand to an argparse subparsers object."""
    from fedmpi.info import ESTIMATORS
    p = subparsers.add_parser(
        "analyze", help="summarise traces, draw the paper's figures, export CSV, re-estimate MI",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", metavar="TRACE.h5", nargs="+", help="trace file(s) written by a fedmpi run")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="write PNG figures to DIR: <job>-mi-<estimator>.png (the paper's Figures 1-4), "
                        "<job>-accuracy.png, <job>-infoplane-<estimator>.png")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write every per-round metric to FILE in long format "
                        "(round,step,worker,model,metric,value; a leading trace column for several "
                        "traces); '-' writes to stdout")
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="write every row's scalars as TensorBoard event files under DIR/<job> (the tags a "
                        "run with trace.tensorboard writes; needs the tensorboard extra)")
    p.add_argument("--estimator", metavar="NAME", default=None,
                   help="re-estimate I(X;Z) and I(Z;Y) from the logged activations with this estimator "
                        f"({', '.join(ESTIMATORS)}) and print the results")
    p.add_argument("--param", dest="params", metavar="KEY=VALUE", action="append", default=[],
                   help="estimator parameter for --estimator, e.g. --param k=5 (repeatable; the value is "
                        "YAML)")
    p.add_argument("--write", action="store_true",
                   help="with --estimator: store the results in the trace under "
                        "/analysis/mi/<estimator>-<hash of params>; never touches what the run recorded")
    p.add_argument("--overwrite", action="store_true",
                   help="with --write: replace that analysis group if it exists")


def main(args) -> int:
    """Run `analyze` for parsed arguments; returns the exit status (2 for bad input)."""
    try:
        return _main(args)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"fedmpi: error: {exc}\n")
        sys.stderr.flush()
        return 2


def _main(args) -> int:
    from fedmpi.analysis import plots, reestimate, tables
    if args.estimator is None and (args.params or args.write or args.overwrite):
        raise UsageError("--param, --write and --overwrite need --estimator NAME")
    if args.overwrite and not args.write:
        raise UsageError("--overwrite only applies with --write")
    from fedmpi.trace import load_trace
    from fedmpi.analysis import summary
    params = reestimate.estimator_params(args.estimator, args.params) if args.estimator else None
    traces = [load_trace(path) for path in args.traces]
    out = summary.console()
    if args.estimator is not None:
        reestimate.reestimate_all(traces, args.estimator, params, args.write, args.overwrite, out)
    if args.csv is not None:
        tables.write_csv_file(traces, args.csv, out)
    if args.plots is not None:
        for path in plots.write_plots(traces, args.plots):
            out.print(path)
    if args.tensorboard is not None:
        from fedmpi.analysis import board
        board.export(traces, args.tensorboard, out)
    if args.estimator is None and args.csv is None and args.plots is None and args.tensorboard is None:
        if len(traces) == 1:
            summary.print_summary(traces[0], out)
        else:
            summary.print_comparison(traces, out)
    return 0
