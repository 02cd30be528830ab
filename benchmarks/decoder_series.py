"""The decoder in a series against single estimates, on a real trace's activations.

    PYTHONPATH=. python benchmarks/decoder_series.py TRACE [N] [EVERY] [--retune R [R ...]]

TRACE needs `/activations` (a run with `trace.activations: true`). For each
worker and model (local, averaged), over every EVERY-th logged row, with
the first N examples of the worker's probe (default 1,000, the default
probe size), this estimates I(Z;Y) twice: with `info.estimate_with_error`
(the full inner CV every time) and with one `info.Series` (what a run does,
with `decoder.retune` at its default, or at each value of `--retune`). It
prints the seconds per estimate of each, their ratio, and the difference
series - full against the full estimate's standard error. With several
`--retune` values, one series each, on the same rows (the full estimate is
made once). One BLAS thread, as inside a run.
"""

from __future__ import annotations

import argparse
import time

import h5py
import numpy as np

from fedmpi import info
from fedmpi.device import limit_threads
from fedmpi.info.decoder import DecoderParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("n", nargs="?", type=int, default=1000, help="probe examples per estimate")
    parser.add_argument("every", nargs="?", type=int, default=4, help="use every EVERY-th logged row")
    parser.add_argument("--retune", type=int, nargs="+", default=[DecoderParams().retune],
                        help="decoder.retune of the series (default: the estimator's default)")
    args = parser.parse_args()
    limit_threads(1)  # one BLAS thread, as in a run (also for scipy, loaded later)
    with h5py.File(args.trace, "r") as f:
        labels = f["probe/labels"][:, :args.n]
        rows = list(range(0, f["activations/local"].shape[0], args.every))
        print(f"{args.trace}: {len(rows)} rows, N = {args.n}")
        print(f"{'model':>9} {'worker':>6} {'retune':>6} {'full s/est':>10} {'series s/est':>12} {'ratio':>6} "
              f"{'mean diff':>9} {'min diff':>9} {'max diff':>9} {'mean se':>8}")
        for model in ("local", "averaged"):
            act = f[f"activations/{model}"]
            for k in range(act.shape[1]):
                serieses = {r: info.Series("decoder", retune=r) for r in args.retune}
                full_s = 0.0
                series_s = dict.fromkeys(args.retune, 0.0)
                diffs = {r: [] for r in args.retune}
                ses = []
                for r in rows:
                    z = act[r, k, :args.n]
                    t = time.perf_counter()
                    full = info.estimate_with_error("decoder", z, labels[k])
                    full_s += time.perf_counter() - t
                    ses.append(full.stderr)
                    for retune, series in serieses.items():
                        t = time.perf_counter()
                        got = series.estimate_with_error(z, labels[k])
                        series_s[retune] += time.perf_counter() - t
                        diffs[retune].append(got.value - full.value)
                for retune in args.retune:
                    d = np.array(diffs[retune])
                    print(f"{model:>9} {k + 1:>6} {retune:>6} {full_s / len(rows):>10.3f} "
                          f"{series_s[retune] / len(rows):>12.3f} {full_s / series_s[retune]:>6.1f} "
                          f"{d.mean():>+9.4f} {d.min():>+9.4f} {d.max():>+9.4f} {np.mean(ses):>8.3f}", flush=True)


if __name__ == "__main__":
    main()
