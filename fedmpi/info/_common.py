"""Shared helpers for the mutual-information estimators in :mod:`fedmpi.info`.

Adilova et al. (2019), "Information-theoretic perspective of federated
learning", measure I(X;Z) and I(Z;Y) at every aggregation; each estimator module
turns one side of such a pair into a :class:`Side` and combines two sides into
a value in nats. Everything here is a pure function on arrays: no global RNG,
no in-place changes to the caller's arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from fedmpi.registry import Registry

FLOAT = "float"
LABELS = "labels"


XZ = "xz"  # a pair of two float sides: I(X;Z)
ZY = "zy"  # a float side and a label side: I(Z;Y)


class Estimate(NamedTuple):
    """An estimate in nats and its standard error (NaN where the estimator gives none)."""

    value: float
    stderr: float


@dataclass(frozen=True)
class Estimator:
    """What an estimator module registers: how it prepares one side, how it combines two.

    - `prepare_side(side, params, position) -> prepared` (position 0 for the
      first argument of `estimate`, 1 for the second);
    - `mutual_information(prepared_a, prepared_b, params) -> nats`;
    - `describe(params) -> {"xz": str, "zy": str, "xz_kind": str, "zy_kind": str, ...}`:
      what the two numbers it returns actually are, in words short enough
      for a trace attribute or a plot label (see :func:`fedmpi.info.describe`);
    - `with_error(prepared_a, prepared_b, params) -> Estimate`, or None when
      the estimator has no standard error (then `estimate_with_error` gives NaN);
    - `pairs`: which pairs it accepts, a subset of (XZ, ZY); asking for
      another raises ValueError naming the estimator.
    - `series_step(prepared_a, prepared_b, params, memo) -> (Estimate, memo)`,
      or None: one estimate of a series (the same quantity at successive
      sync points), handed what the previous one left (`memo`, None at the
      first) so it can start from there (see :class:`fedmpi.info.Series`).
    - `modules`: the modules it imports where it uses them, not at import
      (scipy's cost half a second of every rank's start-up, and only the
      coordinator estimates); :func:`fedmpi.info.load` imports them ahead,
      off the critical path.
    """

    prepare_side: Callable[[Any, Any, int], Any]
    mutual_information: Callable[[Any, Any, Any], float]
    describe: Callable[[Any], dict]
    with_error: Callable[[Any, Any, Any], Estimate] | None = None
    pairs: tuple[str, ...] = (XZ, ZY)
    series_step: Callable[[Any, Any, Any, Any], tuple[Estimate, Any]] | None = None
    modules: tuple[str, ...] = ()


ESTIMATORS: Registry[Estimator] = Registry("MI estimator")


@dataclass(frozen=True, eq=False)
class Side:
    """One side of an MI pair after conversion.

    ``values`` is ``(N, d) float64`` for continuous data (read-only when it is a
    view of the caller's array) or ``(N,) int64`` label codes ``0..K-1`` for
    integer labels.
    """

    kind: str  # FLOAT or LABELS
    values: np.ndarray  # (N, d) float64 or (N,) int64
    n_classes: int  # K for labels, 0 for float data
    classes: np.ndarray | None = None  # (K,) the label values behind codes 0..K-1; None for float data

    @property
    def n(self) -> int:
        return int(self.values.shape[0])


def as_side(x) -> Side:
    """Convert an input array to a :class:`Side`.

    A 1-D integer (or bool) array is a label vector; anything else is samples
    along axis 0, flattened to ``(N, d)`` and converted to float64 (so uint8
    images are features, not labels).
    """
    arr = np.asarray(x)
    if arr.ndim == 0:
        raise ValueError("MI input must have a sample axis, got a scalar")
    if arr.shape[0] < 2:
        raise ValueError(f"MI input needs at least 2 samples, got {arr.shape[0]}")
    if arr.ndim == 1 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        classes, codes = np.unique(arr, return_inverse=True)
        codes = codes.astype(np.int64).reshape(-1)
        return Side(LABELS, codes, int(codes.max()) + 1, classes)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"MI input must be numeric, got dtype {arr.dtype}")
    values = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    if np.shares_memory(values, arr):
        # No copy for float64 input (X can be 25,000 x 3,072); a read-only view
        # makes any accidental write downstream fail instead of reaching the
        # caller's array.
        values = values.view()
        values.flags.writeable = False
    if values.shape[1] == 0:
        raise ValueError("MI input has zero features")
    if not np.all(np.isfinite(values)):
        raise ValueError("MI input contains NaN or inf")
    return Side(FLOAT, values, 0)


def standardize(values: np.ndarray) -> np.ndarray:
    """Centre each column and divide by its std; constant columns become 0.

    Dividing a constant column by its zero std would give NaN, so such columns
    are divided by 1 instead (they carry no information either way).
    """
    centred = values - values.mean(axis=0)  # (N, d) float64, new array
    std = centred.std(axis=0)
    std[std == 0.0] = 1.0
    return centred / std


def entropy_of_codes(codes: np.ndarray) -> float:
    """Plug-in Shannon entropy (nats) of a vector of discrete codes."""
    _, counts = np.unique(codes, return_counts=True)
    p = counts / codes.shape[0]
    return float(-(p * np.log(p)).sum())


def row_codes(cells: np.ndarray) -> np.ndarray:
    """Map each row of an integer matrix ``(N, d)`` to a dense code ``(N,) int64``.

    Exact (no hash collisions): rows are equal iff their codes are equal.
    """
    if cells.shape[1] == 1:
        _, inv = np.unique(cells[:, 0], return_inverse=True)
    else:
        # Lexicographic sort of the rows, then mark where a row differs from its
        # predecessor; cheaper than np.unique(axis=0) on wide int64 rows.
        order = np.lexsort(cells.T[::-1])
        sorted_cells = cells[order]
        new_group = np.empty(cells.shape[0], dtype=bool)
        new_group[0] = True
        np.any(sorted_cells[1:] != sorted_cells[:-1], axis=1, out=new_group[1:])
        inv = np.empty(cells.shape[0], dtype=np.int64)
        inv[order] = np.cumsum(new_group) - 1
    return inv.astype(np.int64).reshape(-1)


def plugin_mi(codes_a: np.ndarray, codes_b: np.ndarray) -> float:
    """Plug-in MI (nats) of two discrete code vectors: H(A) + H(B) - H(A,B)."""
    kb = int(codes_b.max()) + 1
    joint = codes_a * kb + codes_b
    return entropy_of_codes(codes_a) + entropy_of_codes(codes_b) - entropy_of_codes(joint)


def pair_kind(kind_a: str, kind_b: str) -> str:
    """XZ for two float sides, ZY for one float and one label side, "yy" for two label sides."""
    if kind_a == FLOAT and kind_b == FLOAT:
        return XZ
    if kind_a == LABELS and kind_b == LABELS:
        return "yy"
    return ZY


def conditional_split(labels: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Indices of the samples of each label, in label order (empty labels dropped)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(n_classes) if bounds[c + 1] > bounds[c]]


# ----- parameter validation helpers (messages name the field and the range) ---


def check_int(est: str, field: str, value, lo: int, hi: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    ok = ok and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{est}.{field} must be an integer {rng}, got {value!r}")


def check_float(est: str, field: str, value, lo: float, *, lo_open: bool = True,
                allow_inf: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = not math.isnan(v) and (allow_inf or math.isfinite(v))
        ok = ok and (v > lo if lo_open else v >= lo)
    if not ok:
        rel = ">" if lo_open else ">="
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{est}.{field} must be {kind} {rel} {lo}, got {value!r}")


def check_choice(est: str, field: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{est}.{field} must be one of {choices}, got {value!r}")


def check_bool(est: str, field: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{est}.{field} must be true or false, got {value!r}")


def check_positive_grid(est: str, field: str, value) -> None:
    """A non-empty tuple of distinct finite numbers > 0."""
    ok = isinstance(value, tuple) and len(value) >= 1
    ok = ok and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    and math.isfinite(float(v)) and float(v) > 0 for v in value)
    ok = ok and len(set(float(v) for v in value)) == len(value)
    if not ok:
        raise ValueError(f"{est}.{field} must be a non-empty list of distinct finite numbers > 0, got {value!r}")
