"""Binning MI estimator of Shwartz-Ziv & Tishby, in nats.

Shwartz-Ziv, Tishby, "Opening the black box of deep neural networks via
information" (2017); the plug-in estimator that information-plane studies
such as Adilova et al. (2019) are compared against.

fedmpi's binning computes, on N samples:

- Binning of a continuous side: every value goes to one of ``bins`` equal-width
  bins over ``[lo, hi]``; with ``range_mode="global"`` (default, as
  Shwartz-Ziv & Tishby: one range per layer) lo/hi are the min/max over all
  units, with ``"per_unit"`` each unit (column) has its own min/max.  Bin
  index ``min(floor((v - lo) / (hi - lo) * bins), bins - 1)``; a range with
  hi == lo puts everything in bin 0.  A sample's "pattern" is its row of
  bin indices; H(.) is the plug-in entropy of the patterns.
- a and b both continuous (I(X;Z), ``a`` = inputs X, ``b`` = representation
  Z): with ``a_distinct=True`` (default) every input is its own symbol, as in
  Shwartz-Ziv & Tishby, and Z is a deterministic function of X, so
  ``I = H(binned b)`` (a is only used for N).  With ``a_distinct=False``
  both sides are binned and ``I = H(Ba) + H(Bb) - H(Ba, Bb)``.
  Either way I <= log N.
- One side labels y, the other continuous Z:
  ``I = H(binned Z) - sum_y p(y) H(binned Z | y)``.
- Both sides labels: the plug-in MI of the two label vectors.

Binning is not a consistent estimator of the MI of continuous variables: the
value depends on ``bins`` and saturates at log N.

What the numbers are (:func:`describe`): I(X;Z) is H(B(Z)), the plug-in
entropy of the bin patterns of Z on the sample (with ``a_distinct``), and
I(Z;Y) the plug-in MI of the patterns and Y.  With 84 units almost every
pattern is unique, so I(Z;Y) = H(Y) whatever the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common as c

NAME = "binning"


@dataclass(frozen=True)
class BinningParams:
    """Binning parameters; stored in the trace with every estimate."""

    bins: int = 30  # equal-width bins per unit (Shwartz-Ziv & Tishby use 30)
    range_mode: str = "global"  # "global": one [min, max] per layer; "per_unit": per column
    a_distinct: bool = True  # float a: each row its own symbol, so I(X;Z) = H(binned Z)

    def check(self) -> None:
        c.check_int(NAME, "bins", self.bins, 1)
        c.check_choice(NAME, "range_mode", self.range_mode, ("global", "per_unit"))
        c.check_bool(NAME, "a_distinct", self.a_distinct)


@dataclass(frozen=True, eq=False)
class BinnedSide:
    kind: str  # c.FLOAT or c.LABELS
    codes: np.ndarray  # (N,) int64 pattern codes, or label codes


def bin_patterns(x: np.ndarray, bins: int, range_mode: str) -> np.ndarray:
    """Dense pattern codes (N,) int64 of x (N, d) float64."""
    if range_mode == "global":
        lo, hi = x.min(), x.max()
    else:
        lo, hi = x.min(axis=0), x.max(axis=0)  # (d,)
    width = np.where(hi > lo, hi - lo, 1.0)  # constant range -> every value in bin 0
    idx = np.floor((x - lo) / width * bins).astype(np.int64)  # (N, d)
    np.clip(idx, 0, bins - 1, out=idx)  # v == hi lands in the last bin
    return c.row_codes(idx)


def prepare_side(side: c.Side, params: BinningParams, position: int) -> BinnedSide:
    if side.kind == c.LABELS:
        return BinnedSide(side.kind, side.values)
    return BinnedSide(side.kind, bin_patterns(side.values, params.bins, params.range_mode))


def _h_minus_conditional(z: np.ndarray, y: np.ndarray) -> float:
    n = z.shape[0]
    h_cond = sum(idx.shape[0] / n * c.entropy_of_codes(z[idx])
                 for idx in c.conditional_split(y, int(y.max()) + 1))
    return c.entropy_of_codes(z) - h_cond


def mutual_information(a: BinnedSide, b: BinnedSide, params: BinningParams) -> float:
    if a.kind == c.LABELS and b.kind == c.LABELS:
        return c.plugin_mi(a.codes, b.codes)
    if b.kind == c.LABELS:
        return _h_minus_conditional(a.codes, b.codes)
    if a.kind == c.LABELS:
        return _h_minus_conditional(b.codes, a.codes)
    if params.a_distinct:
        return c.entropy_of_codes(b.codes)
    return c.plugin_mi(a.codes, b.codes)


def describe(params: BinningParams) -> dict:
    rng = "the layer's [min, max]" if params.range_mode == "global" else "each unit's [min, max]"
    binned = f"Z cut into {params.bins} equal bins over {rng}"
    xz = (f"H(B(Z)), plug-in entropy of the bin patterns of {binned} (each input its own symbol); <= ln N"
          if params.a_distinct else f"plug-in MI of the bin patterns of X and of {binned}")
    return {"xz": xz, "zy": f"plug-in MI of the bin patterns of {binned} and Y; = H(Y) when every pattern is unique",
            "xz_kind": "estimate", "zy_kind": "estimate", "bins": int(params.bins)}


c.ESTIMATORS.register(NAME, BinningParams)(c.Estimator(prepare_side, mutual_information, describe))
