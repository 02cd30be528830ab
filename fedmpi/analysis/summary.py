"""Summaries: one trace as a table, several traces as a comparison table (a row per trace)."""

from __future__ import annotations

import sys
from typing import Sequence

from fedmpi.trace import MODELS, Trace, setting

MISSING = "?"  # shown for config fields a trace's config does not give


def console():
    from rich.console import Console
    # Pipes and files get a wide console so comparison tables keep one line per trace.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 1000)


def job_fields(t: Trace) -> dict[str, str]:
    """What the summary shows of a trace's config; MISSING for what its config does not give."""
    name, partition = setting(t, "data.name", MISSING), setting(t, "data.partition", MISSING)
    if partition == "dirichlet":
        partition += f" (alpha {setting(t, 'data.alpha', MISSING):g})"
    if partition == "shards":
        partition += f" ({setting(t, 'data.classes_per_client', MISSING)} classes per client)"
    every, redistribute = setting(t, "sync.every"), setting(t, "sync.redistribute")
    unit = setting(t, "sync.unit", "batches")  # traces before sync.unit counted batches
    return {"dataset": str(name), "partition": str(partition),
            "sync every": MISSING if every is None else f"{every} local {unit}",
            "redistribution": MISSING if redistribute is None else
            "with redistribution" if redistribute else "without redistribution"}


def policy_label(t: Trace) -> str:
    """The sync policy and its parameters as the trace stored them ("periodic" for traces before it)."""
    attrs = dict(t.sync_attrs or {})
    name = attrs.pop("policy", "periodic")
    for key in ("check_every", "unit", "num_checks"):
        attrs.pop(key, None)
    return name + (f" ({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(attrs.items()))})"
                   if attrs else "")


def policy_line(t: Trace) -> str:
    """Where the sync policy stood at the last row: sync points at check points, and its state."""
    import numpy as np
    label = policy_label(t)
    if not t.rounds:
        return f"{label}: no sync point written yet"
    syncs = int(t.index[-1]) + 1
    if not t.sync or "check_index" not in t.sync:
        return f"{label}: every check point a sync point, {syncs} so far"
    checks = int(t.sync["check_index"][-1]) + 1
    total = (t.sync_attrs or {}).get("num_checks", MISSING)
    line = (f"{label}: {syncs} sync points at {checks} of {total} check points (one every "
            f"{setting(t, 'sync.every', MISSING)} local {setting(t, 'sync.unit', 'batches')})")
    state = {k: v[-1] for k, v in t.sync.items() if k != "check_index"}
    if state:
        line += "; at the last row " + ", ".join(
            f"{k} {'-' if np.isnan(v) else f'{v:.4g}'}" for k, v in state.items())
    return line


def setup_line(t: Trace) -> str:
    """The training setup beside the algorithm: augmentation, optimizer state, lr schedule, weighting
    (the defaults for traces written before these keys)."""
    schedule = setting(t, "train.lr_schedule", "constant")
    if schedule == "step":
        schedule += f" (x{setting(t, 'train.lr_gamma', MISSING)} every {setting(t, 'train.lr_step', MISSING)} sync points)"
    return (f"lr {setting(t, 'train.lr', MISSING)} {schedule}, batch {setting(t, 'train.batch_size', MISSING)}, "
            f"optimizer state {setting(t, 'train.optimizer_state', 'keep')}, augmentation "
            f"{setting(t, 'data.augment', 'none')}, weighting {setting(t, 'clients.weighting', 'examples')}")


def print_label_counts(t: Trace, out) -> None:
    """Each client's training examples per label (/clients/label_counts), its worker and, with
    /clients/steps, the local steps it took; a line saying so for traces without them. Clients
    and workers are counted from 1, as everywhere on the console (the trace counts from 0)."""
    from rich.table import Table
    if t.label_counts is None:
        out.print("no label counts in this trace (written before /clients/label_counts)")
        return
    counts = t.label_counts  # (C, K)
    owner = t.client_owner if t.client_owner is not None else range(len(counts))
    steps = t.client_steps[-1] if t.client_steps is not None and t.rounds else None
    table = Table(title="training examples per label, per client")
    for col in ["client", "worker", "examples", *map(str, range(counts.shape[1]))] + (
            ["local steps"] if steps is not None else []):
        table.add_column(col, justify="right")
    for c, row in enumerate(counts):
        table.add_row(str(c + 1), str(int(owner[c]) + 1), str(int(row.sum())), *map(str, row.tolist()),
                      *([str(int(steps[c]))] if steps is not None else []))
    out.print(table)


def fmt(values, digits: int = 4) -> str:
    import numpy as np
    values = np.atleast_1d(values)
    return " ".join("-" if np.isnan(v) else f"{v:.{digits}f}" for v in values)


def _best(values) -> tuple:
    """Best value per column of (R,) or (R, W) and the 1-based sync point where it was reached."""
    import numpy as np
    if len(values) == 0:
        return np.full(values.shape[1:], np.nan), None
    return np.nanmax(values, axis=0), np.nanargmax(values, axis=0) + 1


def latest_mi(t: Trace, est: str) -> tuple[int | None, dict]:
    """Row of the newest round whose MI estimate is written (all NaN before), and its values."""
    import numpy as np
    values = t.mi[est]
    done = np.flatnonzero(~np.all(np.isnan(np.stack([values[k] for k in values], axis=1)), axis=(1, 2)))
    if len(done) == 0:
        return None, {}
    r = int(done[-1])
    return r, {k: v[r] for k, v in values.items()}


def band_violations(t: Trace, z: float = 2.0) -> list[tuple[str, int, int, str, object]]:
    """Every I(Z;Y) estimate of the trace outside [Fano, H(Y)] beyond `z` combined standard
    errors: (estimator, row, worker, model, info.bounds.BoundCheck). Empty for traces
    without /bounds (schema 1)."""
    import numpy as np

    from fedmpi.info.bounds import outside_band
    if not t.bounds:
        return []
    out = []
    for est, values in t.mi.items():
        for r in range(t.rounds):
            row_bounds = {name: v[r] for name, v in t.bounds.items()}
            for model in MODELS:
                v = values[f"zy_{model}"][r]
                if np.all(np.isnan(v)):
                    continue
                for k, check in outside_band(v, t.mi_se[est][f"zy_{model}"][r], row_bounds, model, z):
                    out.append((est, r, k, model, check))
    return out


def est_label(t: Trace, est: str) -> str:
    return f"{est} (re-estimated)" if est in t.analysis else est


def compression_label(t: Trace) -> str:
    """The compressor and its parameters as the trace stored them ("none" before schema 3)."""
    attrs = dict(t.comm_attrs or {})
    name = attrs.pop("compression", "none")
    for key in ("collective", "measure_distortion", "num_params", "message_bytes", "payload_bytes"):
        attrs.pop(key, None)
    return name + (f" ({', '.join(f'{k}={v}' for k, v in sorted(attrs.items()))})" if attrs else "")


def comm_totals(t: Trace) -> dict | None:
    """Totals over the run of what crossed MPI (schema 3 on; None before): bytes and messages
    summed over rows and workers, bits per parameter per sync point and the limit ratio."""
    import numpy as np
    if not t.comm or "bytes_up" not in t.comm or not t.rounds:
        return None
    c = t.comm
    bits, limit = c["update_bits"], c["rd_limit_bits"]
    measured = np.isfinite(limit) & np.isfinite(bits)
    return dict(bytes_up=int(c["bytes_up"].sum()), bytes_down=int(c["bytes_down"].sum()),
                messages=int(c["messages"].sum()), diagnostic=int(c["diagnostic_bytes"].sum()),
                bits=float(np.nanmean(bits)), distortion=float(np.nanmean(c["distortion"])) if measured.any()
                else float("nan"),
                ratio=float(np.mean(bits[measured] / limit[measured])) if measured.any() else float("nan"))


def megabytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def print_summary(t: Trace, out) -> None:
    import numpy as np
    from rich.table import Table
    table = Table(title=f"fedmpi trace {t.path}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    job = job_fields(t)
    table.add_row("job", t.job)
    table.add_row("data", f"{job['dataset']}, {job['partition']} partition, {t.num_workers} workers "
                          f"({' '.join(str(n) for n in t.num_examples)} examples)")
    periodic = setting(t, "sync.policy.name", "periodic") == "periodic"  # traces before sync.policy: periodic
    table.add_row("sync", f"{'every' if periodic else 'check points every'} {job['sync every']}, "
                          f"{job['redistribution']}")
    table.add_row("sync policy", policy_line(t))
    table.add_row("training", setup_line(t))
    status = t.status + (f" (finished {t.attrs['finished']})" if "finished" in t.attrs else "")
    table.add_row("status", status)
    R = t.rounds
    if R:
        table.add_row("rounds done", f"{R} logged (last: sync point {int(t.index[-1]) + 1}, local step "
                                     f"{int(t.step[-1])}, epoch {t.epoch[-1]:.2f}, {t.time[-1]:.1f} s)")
    else:
        table.add_row("rounds done", "0 (no round written yet)")
    test_what = "test accuracy (averaged)"
    if R and t.test_examples is not None and len(set(t.test_examples.tolist())) > 1:
        test_what += (f"; final on {int(t.test_examples[-1])} test images, earlier sync points on a fixed "
                      f"subset of {int(t.test_examples[0])} (data.test_subset)")
    for name, what in (("test_acc", test_what), ("local_acc", "local accuracy (own shard)"),
                       ("averaged_acc", "averaged accuracy (each shard)")):
        values = t.metrics[name]
        if R:
            best, at = _best(values)
            bests = "  ".join(f"{fmt(b)} (sync point {a})"
                              for b, a in zip(np.atleast_1d(best), np.atleast_1d(at)))
            table.add_row(what, f"final {fmt(values[-1])}  best {bests}")
    totals = comm_totals(t)
    if totals is not None:
        table.add_row("compression", f"{compression_label(t)}, {totals['bits']:.3f} bits per parameter "
                                     f"per sync point from all {t.num_workers} workers")
        line = (f"up {megabytes(totals['bytes_up'])}, down {megabytes(totals['bytes_down'])}, "
                f"{totals['messages']} messages (all workers, whole run)")
        if totals["diagnostic"]:
            line += f"; diagnostic {megabytes(totals['diagnostic'])} apart"
        table.add_row("communication", line)
        if t.divergence and np.isfinite(t.divergence["relative"][-1]).any():
            rel = t.divergence["relative"][-1]
            top = int(np.nanargmax(rel))
            table.add_row("divergence", f"last sync point: largest relative divergence {rel[top]:.4f} in "
                                        f"{t.layers[top]}; smallest {np.nanmin(rel):.4f} "
                                        f"({t.layers[int(np.nanargmin(rel))]})")
        if not np.isnan(totals["ratio"]):
            table.add_row("rate-distortion", f"distortion {totals['distortion']:.3g} per element (mean); "
                                             f"bits / R_sum limit at it: {totals['ratio']:.2f} (mean)")
    out.print(table)
    print_label_counts(t, out)
    if not t.mi:
        out.print("no MI estimates in this trace (mi.estimators was empty)")
        return
    bounded = bool(t.bounds)
    title = "latest MI estimates (nats, ± standard error), per worker"
    if bounded:
        examples = ("held-out test examples with the shard's label proportions"
                    if setting(t, "data.probe_from", "shard") == "test" else "training examples")
        title += ("; I(Z;Y) lies in [Fano, H(Y)] of the worker's probe: Fano from the model's error, "
                  f"head = H(Y) - CE of the model's own classifier (probe examples are {examples})")
    mi_table = Table(title=title)
    cols = ["estimator", "sync point", "worker", "I(X;Z) local", "I(X;Z) averaged", "I(Z;Y) local",
            "I(Z;Y) averaged"]
    if bounded:
        cols += ["Fano local", "Fano averaged", "head local", "head averaged", "H(Y)"]
    for col in cols:
        mi_table.add_column(col, justify="left" if col == "estimator" else "right")
    found = band_violations(t)
    flagged = {(est, r, k, model) for est, r, k, model, _ in found}
    for est in t.mi:
        r, values = latest_mi(t, est)
        if r is None:
            mi_table.add_row(est_label(t, est), "-", "-", "not estimated yet", *[""] * (len(cols) - 4))
            continue
        se = t.mi_se[est]
        for k in range(t.num_workers):
            cells = [est_label(t, est) if k == 0 else "", str(int(t.index[r]) + 1), str(k + 1)]
            for key in ("xz_local", "xz_averaged", "zy_local", "zy_averaged"):
                cell = fmt(values[key][k])
                if not np.isnan(se[key][r, k]):
                    cell += f" ± {se[key][r, k]:.3f}"
                if key.startswith("zy") and (est, r, k, key[3:]) in flagged:
                    cell += " !"
                cells.append(cell)
            if bounded:
                cells += [fmt(t.bounds[name][r, k], 3) for name in
                          ("fano_local", "fano_averaged", "head_local", "head_averaged", "entropy")]
            mi_table.add_row(*cells)
    out.print(mi_table)
    print_band_report(t, found, out)


def print_band_report(t: Trace, found: list, out) -> None:
    """One line per estimator on the band check over all rows (`found`: band_violations(t));
    the failures recorded in the trace."""
    if t.bounds:
        for est in t.mi:
            mine = [v for v in found if v[0] == est]
            if not mine:
                out.print(f"{est_label(t, est)}: every I(Z;Y) estimate inside [Fano, H(Y)] (within 2 standard "
                          "errors)")
                continue
            shown = "; ".join(f"sync point {int(t.index[r]) + 1} worker {k + 1} {model}: {check.side} by "
                              f"{check.excess:.3f} nats ({check.excess_se:.1f} se)"
                              for _, r, k, model, check in mine[:5])
            more = f"; +{len(mine) - 5} more" if len(mine) > 5 else ""
            out.print(f"! {est_label(t, est)}: {len(mine)} I(Z;Y) estimate(s) outside [Fano, H(Y)] beyond "
                      f"sampling error (marked !): {shown}{more}")
    else:
        out.print("this trace has no /bounds (written before schema 2): I(Z;Y) cannot be checked against them")
    for est, failures in (t.mi_failures or {}).items():
        for r, reason in list(failures.items())[:3]:
            out.print(f"! {est} failed at sync point {int(t.index[r]) + 1} (values NaN): {reason}")
        if len(failures) > 3:
            out.print(f"! {est} failed at {len(failures) - 3} more sync point(s); all reasons are in "
                      f"/mi/{est}/failure")


def print_comparison(traces: Sequence[Trace], out) -> None:
    import numpy as np
    from rich.table import Table
    estimators = list(dict.fromkeys(est for t in traces for est in t.mi))
    table = Table(title="fedmpi traces (accuracies: final; local/averaged: mean over workers; "
                        "MI: latest, mean over workers, nats; outside: I(Z;Y) estimates outside "
                        "[Fano, H(Y)] beyond sampling error, all rows)")
    cols = ["trace", "job", "data", "workers", "sync every", "sync policy", "redistribution", "status", "rounds",
            "test acc", "best test", "local acc", "averaged acc", "compression", "MB up",
            "bits/param/sync", "bits/R_sum"]
    for est in estimators:
        cols += [f"{est} I(X;Z) loc/avg", f"{est} I(Z;Y) loc/avg", f"{est} outside"]
    left = ("trace", "job", "data", "status")
    for col in cols:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col in left)
    for t in traces:
        job = job_fields(t)
        R = t.rounds
        found = band_violations(t)
        redistribute = setting(t, "sync.redistribute")
        row = [t.path, t.job, f"{job['dataset']} {job['partition']}", str(t.num_workers),
               str(setting(t, "sync.every", MISSING)), policy_label(t),
               MISSING if redistribute is None else "yes" if redistribute else "no", t.status, str(R)]
        if R:
            row += [fmt(t.metrics["test_acc"][-1]), fmt(np.nanmax(t.metrics["test_acc"])),
                    fmt(np.mean(t.metrics["local_acc"][-1])), fmt(np.mean(t.metrics["averaged_acc"][-1]))]
        else:
            row += ["-"] * 4
        totals = comm_totals(t)
        if totals is None:
            row += [compression_label(t), "-", "-", "-"]
        else:
            row += [compression_label(t), f"{totals['bytes_up'] / 1e6:.2f}", f"{totals['bits']:.3f}",
                    "-" if np.isnan(totals["ratio"]) else f"{totals['ratio']:.2f}"]
        for est in estimators:
            r, values = latest_mi(t, est) if est in t.mi else (None, {})
            if r is None:
                row += ["-", "-", "-"]
            else:
                row += [f"{np.nanmean(values[f'{s}_local']):.3f}/{np.nanmean(values[f'{s}_averaged']):.3f}"
                        if not np.all(np.isnan(values[f"{s}_local"])) else "-" for s in ("xz", "zy")]
                row.append(str(sum(v[0] == est for v in found)) if t.bounds else "?")
        table.add_row(*row)
    out.print(table)
