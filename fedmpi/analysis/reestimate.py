"""MI re-estimated from a trace's logged activations (`analyze --estimator NAME [--param K=V] [--write]`).

Mirrors the run (fedmpi.measure): X is worker k's flattened probe inputs,
prepared once per worker; Z is its probe's representation as float64.
Results are printed and, with --write, stored under
/analysis/mi/<estimator>-<hash of params> (fedmpi.trace.write_analysis),
never over what the run recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

from fedmpi.analysis.summary import fmt
from fedmpi.errors import UsageError
from fedmpi.trace import (ANALYSIS_GROUP, MI_KEYS, MI_SE_KEYS, MODELS, Trace, dataset, opened,
                          read_activations, read_probe, write_analysis)


def estimator_params(name: str, assignments: Sequence[str]):
    """Checked parameters for estimator `name` from KEY=VALUE strings (values are YAML)."""
    import typing

    import yaml

    from fedmpi import info
    if name not in info.ESTIMATORS:
        raise UsageError(f"unknown MI estimator {name!r}; choose one of {', '.join(info.ESTIMATORS)}")
    hints = typing.get_type_hints(info.ESTIMATORS[name].params)
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param takes KEY=VALUE, got {assignment!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if hints.get(key) is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):  # YAML reads 1e-3 and inf as strings
                value = float(value)
        overrides[key] = value
    try:
        return info.resolve_params(name, **overrides)
    except ValueError as exc:
        raise UsageError(f"--param: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"--param: bad value for {name}: {exc}") from None


def analysis_name(name: str, params) -> str:
    """`<estimator>-<8 hex digits>`: the group name under /analysis/mi for these parameters."""
    import hashlib
    import json
    text = json.dumps(_plain(params), sort_keys=True)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _plain(params) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def reestimate(f, name: str, params, path: str) -> dict:
    """I(X;Z) and I(Z;Y) (those the estimator estimates) and their standard errors, for every
    complete row and worker of an open trace: key (MI_KEYS, MI_SE_KEYS) -> (R, W) nats."""
    import numpy as np

    from fedmpi import info
    probe_x, probe_y = read_probe(f, path)  # (W, P, C, H, W) float32, (W, P) int64
    R = len(dataset(f, "rounds/step", path))
    W, P = probe_y.shape
    flat_x = probe_x.reshape(W, P, -1)
    pairs = info.pairs(name)
    try:
        prepared = [info.prepare(name, flat_x[k], params) for k in range(W)] if info.XZ in pairs else None
    except ValueError as exc:
        raise UsageError(f"{name} cannot estimate on {path}: {exc}") from None
    out = {key: np.full((R, W), np.nan) for key in MI_KEYS + MI_SE_KEYS}
    # One series per worker and model, in row order, as a run estimates (DecoderParams.retune).
    series = {(k, model): info.Series(name, params) for k in range(W) for model in MODELS}
    for r in range(R):
        z = read_activations(f, path, r)  # model -> (W, P, D) float32
        for k in range(W):
            for model in MODELS:
                zk = z[model][k].astype(np.float64)
                for pair, a, b in ((info.XZ, prepared[k] if prepared else None, zk), (info.ZY, zk, probe_y[k])):
                    if pair not in pairs:
                        continue
                    try:
                        est = (series[k, model].estimate_with_error(a, b) if pair == info.ZY
                               else info.estimate_with_error(name, a, b, params))
                    except ValueError as exc:
                        raise UsageError(f"{name} cannot estimate sync point {r + 1}, worker {k + 1}, {model} model "
                                         f"on {path}: {exc}") from None
                    out[f"{pair}_{model}"][r, k], out[f"{pair}_{model}_se"][r, k] = est.value, est.stderr
    return out


def reestimate_all(traces: Sequence[Trace], name: str, params, write: bool, overwrite: bool, out) -> None:
    group_name = f"{ANALYSIS_GROUP}/{analysis_name(name, params)}"
    for t in traces:
        if not t.has_activations:
            raise UsageError(f"{t.path} has no logged activations (the run had trace.activations: false), so "
                             "MI cannot be re-estimated from it; re-run with --set trace.activations=true")
    if write:  # fail before any estimate is computed
        for t in traces:
            with opened(t.path, write=True) as f:
                if group_name in f and not overwrite:
                    raise UsageError(f"{t.path} already has /{group_name} (same estimator and parameters); "
                                     "pass --overwrite to replace it")
    for t in traces:
        with opened(t.path, write=write) as f:
            values = reestimate(f, name, params, t.path)
            print_estimates(t, name, params, values, out)
            if write:  # --overwrite: only this analysis group is replaced
                from fedmpi import info
                attrs = dict(_plain(params), estimator=name, units="nats", rounds=t.rounds,
                             **{f"what_{k}": v for k, v in info.describe(name, params).items()})
                write_analysis(f, group_name, attrs, values)
                out.print(f"wrote /{group_name} to {t.path}")


def print_estimates(t: Trace, name: str, params, values: dict, out) -> None:
    from rich.table import Table
    settings = ", ".join(f"{k}={v}" for k, v in _plain(params).items())
    table = Table(title=f"{t.path}: {name} ({settings}), nats")
    for col in ("sync point", "step", "worker", "I(X;Z) local", "I(X;Z) averaged", "I(Z;Y) local",
                "I(Z;Y) averaged"):
        table.add_column(col, justify="right")
    for r in range(t.rounds):
        for k in range(t.num_workers):
            table.add_row(str(int(t.index[r]) + 1) if k == 0 else "", str(int(t.step[r])) if k == 0 else "",
                          str(k), *(fmt(values[key][r, k]) for key in ("xz_local", "xz_averaged", "zy_local",
                                                                        "zy_averaged")))
    out.print(table)
