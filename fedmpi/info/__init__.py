"""Mutual-information estimators and bounds for I(X;Z) and I(Z;Y), results in nats.

Adilova, Rosenzweig, Kamp, "Information-theoretic perspective of federated
learning" (2019) measure, at each aggregation, the MI between the inputs X and
the last hidden representation Z, and between Z and the labels Y, with EDGE
(Noshad et al., ICASSP 2019).  fedmpi offers these estimators, one module
each, registered by name in ``ESTIMATORS`` (a new estimator is one module that
registers itself plus its import below):

- ``edge``    -- :mod:`fedmpi.info.edge`, hashing/dependence-graph ensemble.
- ``ksg``     -- :mod:`fedmpi.info.ksg`, Kraskov-Stoegbauer-Grassberger k-NN.
- ``binning`` -- :mod:`fedmpi.info.binning`, Shwartz-Ziv & Tishby binning.
- ``kde``     -- :mod:`fedmpi.info.kde`, Kolchinsky-Tracey pairwise bounds on
  the MI of Z + Gaussian noise.
- ``decoder`` -- :mod:`fedmpi.info.decoder`, cross-fitted variational lower
  bound H(Y) - CE with a logistic-regression decoder (I(Z;Y) only).
- ``decoder_mlp`` -- :mod:`fedmpi.info.decoder_mlp`, the same with a
  one-hidden-layer MLP decoder (I(Z;Y) only; slower).

:mod:`fedmpi.info.bounds` holds the bounds that need no estimator: H(Y), the
Fano bound from a classifier's errors, H(Y) - CE from a model's own
log-probabilities, and a check of an estimate against [Fano, H(Y)].

Convention: ``estimate(name, a, b)`` with ``a`` the input side (X, or Z when
b is labels) and ``b`` the representation or labels.  A 1-D integer array is a
label vector; any other array is samples along axis 0, flattened to (N, d).
``describe(name, params)`` says in words what the two numbers of an
estimator are.  See docs/mutual-information.md for the exact formulas.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from ._common import ESTIMATORS, XZ, ZY, Estimate, as_side, pair_kind
# Each module registers itself in ESTIMATORS; this order is the order users see.
from . import edge, ksg, binning, kde, decoder, decoder_mlp  # noqa: F401,I001
from . import bounds  # noqa: F401,I001

__all__ = ["ESTIMATORS", "XZ", "ZY", "Estimate", "Prepared", "Series", "bounds", "describe", "estimate",
           "estimate_with_error", "load", "pairs", "prepare", "resolve_params"]


@dataclass(frozen=True, eq=False)
class Prepared:
    """One side (the ``a`` argument) precomputed by :func:`prepare`.

    Only valid for the estimator and the exact parameters it was made with.
    """

    estimator: str
    params: object  # the ESTIMATORS[estimator].params instance used
    n: int  # number of samples
    side: object  # estimator-specific precomputed data


def load(names) -> None:
    """Import the modules the estimators `names` import where they use them (`Estimator.modules`),
    so that their first estimate does not pay for it. The coordinator's measuring thread calls
    this as it starts, while the workers load their data."""
    import importlib

    for name in names:
        for module in _entry(name).impl.modules:
            importlib.import_module(module)
    if names:
        _blas()  # every estimate holds BLAS to one thread (scipy.linalg, threadpoolctl)


def _one_blas_thread():
    """Every estimate runs with one BLAS thread. Its matrices are small (N x D, D x D): with a
    thread per core, OpenBLAS spends the time starting and syncing threads, and the decoder
    took 2.3 s instead of 0.36 s at N = 2,000 on this 2-core machine (measured). A run's
    ranks set `train.threads` themselves (fedmpi.device.limit_threads); this covers `analyze`
    and direct calls. The controller lists the libraries loaded when it is made, so scipy's
    own BLAS is loaded first; using it costs about 10 microseconds a call."""
    return _blas().limit(limits=1, user_api="blas")


@functools.cache
def _blas():
    """The threadpoolctl controller of numpy's and scipy's BLAS, made once (info.load or the
    first estimate)."""
    import scipy.linalg  # noqa: F401 - loads scipy's BLAS, so the controller can see it
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def _entry(name: str):
    try:
        return ESTIMATORS[name]
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def resolve_params(name: str, params=None, **overrides):
    """Return checked parameters for ``name``: defaults or ``params``, then overrides."""
    cls = _entry(name).params
    if params is None:
        params = cls()
    elif not isinstance(params, cls):
        raise ValueError(f"params for {name!r} must be a {cls.__name__}, got {type(params).__name__}")
    if overrides:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown {name} parameter(s) {unknown}; allowed: {sorted(fields)}")
        # A list for a tuple field (from YAML or a command line) becomes a tuple: params stay hashable.
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        overrides = {k: tuple(v) if isinstance(v, list) and isinstance(defaults[k], tuple) else v
                     for k, v in overrides.items()}
        params = dataclasses.replace(params, **overrides)
    params.check()
    return params


def _prepare(name: str, x, params, position: int) -> Prepared:
    side = as_side(x)
    return Prepared(name, params, side.n, _entry(name).impl.prepare_side(side, params, position))


def prepare(name: str, a, params=None, **overrides) -> Prepared:
    """Precompute the ``a`` side once, for repeated ``estimate(name, prepared, b)``.

    ``estimate(name, prepare(name, a, p), b, p)`` equals ``estimate(name, a, b, p)``
    exactly.
    """
    params = resolve_params(name, params, **overrides)
    return _prepare(name, a, params, position=0)


def _prepared_pair(name: str, a, b, params) -> tuple[Prepared, Prepared]:
    if isinstance(a, Prepared):
        if a.estimator != name:
            raise ValueError(f"prepared input was made by estimator {a.estimator!r}, not {name!r}")
        if a.params != params:
            raise ValueError(f"prepared input was made with {a.params}, not {params}")
        pa = a
    else:
        pa = _prepare(name, a, params, position=0)
    if isinstance(b, Prepared):
        raise ValueError("a prepared input must be passed as the first argument `a`")
    pb = _prepare(name, b, params, position=1)
    if pa.n != pb.n:
        raise ValueError(f"a and b must have the same number of samples, got {pa.n} and {pb.n}")
    return pa, pb


def estimate(name: str, a, b, params=None, **overrides) -> float:
    """I(a; b) in nats with estimator ``name``.

    ``a``: float array (N, ...) , integer labels (N,), or a :class:`Prepared`
    from :func:`prepare` with the same estimator and parameters.  ``b``: float
    array (N, ...) or integer labels (N,).  Inputs are never modified and the
    global RNG is never used.  An estimator asked for a pair it does not
    estimate (``decoder`` for I(X;Z)) raises ValueError saying so.
    """
    params = resolve_params(name, params, **overrides)
    pa, pb = _prepared_pair(name, a, b, params)
    with _one_blas_thread():
        return float(_entry(name).impl.mutual_information(pa.side, pb.side, params))


def estimate_with_error(name: str, a, b, params=None, **overrides) -> Estimate:
    """``(value, stderr)`` in nats: :func:`estimate` and its standard error.

    ``value`` equals ``estimate(name, a, b, params)`` exactly.  ``stderr`` is
    NaN for estimators that have none (edge, ksg, binning, kde); for the
    decoders it is the standard error over the examples described in
    :mod:`fedmpi.info.decoder`.
    """
    params = resolve_params(name, params, **overrides)
    pa, pb = _prepared_pair(name, a, b, params)
    impl = _entry(name).impl
    with _one_blas_thread():
        if impl.with_error is None:
            return Estimate(float(impl.mutual_information(pa.side, pb.side, params)), float("nan"))
        value, stderr = impl.with_error(pa.side, pb.side, params)
    return Estimate(float(value), float(stderr))


class Series:
    """Successive estimates of one quantity: one worker's Z under one model, sync point after sync point.

    ``Series(name, params).estimate_with_error(a, b)`` returns what
    :func:`estimate_with_error` returns at the first call. Estimators that
    can (the decoders) then carry work from one call to the next: see
    ``DecoderParams.retune``. For the others every call is independent.
    """

    def __init__(self, name: str, params=None, **overrides):
        self.name = name
        self.params = resolve_params(name, params, **overrides)
        self._memo = None

    def estimate_with_error(self, a, b) -> Estimate:
        impl = _entry(self.name).impl
        if impl.series_step is None:
            return estimate_with_error(self.name, a, b, self.params)
        pa, pb = _prepared_pair(self.name, a, b, self.params)
        with _one_blas_thread():
            (value, stderr), self._memo = impl.series_step(pa.side, pb.side, self.params, self._memo)
        return Estimate(float(value), float(stderr))


def pairs(name: str) -> tuple[str, ...]:
    """Which pairs ``name`` estimates: a subset of (XZ, ZY) = ("xz", "zy")."""
    return tuple(_entry(name).impl.pairs)


def describe(name: str, params=None, **overrides) -> dict:
    """What estimator ``name`` with these parameters actually measures.

    Returns a flat dict of str/float values (fit for HDF5 attributes):
    ``"xz"`` and ``"zy"``: one-sentence statements of the quantity returned
    for I(X;Z) and for I(Z;Y); ``"xz_kind"``, ``"zy_kind"``: one of
    "estimate" (of the quantity stated), "lower_bound", "upper_bound",
    "none" (not estimated); plus estimator-specific numbers such as
    ``"noise_sigma"`` (kde) or ``"bins"`` (binning).
    """
    params = resolve_params(name, params, **overrides)
    out = dict(_entry(name).impl.describe(params))
    out["estimator"] = name
    out["units"] = "nats"
    return out
