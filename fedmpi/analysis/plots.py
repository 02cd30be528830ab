"""Figures (`analyze --plots`): the paper's MI layout, accuracy and loss, the information plane.

Adilova, Rosenzweig, Kamp, "Information-theoretic perspective of federated
learning" (2019) show, for each local dataset, I(X;Z) (left) and I(Z;Y)
(right) at every sync point, for the local models and the averaged model
(their Figures 1-4). Figures are bare matplotlib Figures rendered with Agg,
so pyplot's global state is never touched.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from fedmpi.analysis.summary import compression_label, est_label, job_fields, latest_mi
from fedmpi.trace import setting
from fedmpi.errors import UsageError
from fedmpi.trace import MODELS, Trace

_MODEL_STYLE = {"local": dict(marker="o", linestyle="-"), "averaged": dict(marker="s", linestyle="--")}
_MODEL_COLOR = {"local": "tab:blue", "averaged": "tab:orange"}


def labels(traces: Sequence[Trace]) -> list[str]:
    """File-name prefixes: the job name; where jobs repeat, the trace's file name (prefixed by the job)."""
    jobs = [t.job for t in traces]
    labels = []
    for job, t in zip(jobs, traces):
        stem = os.path.splitext(os.path.basename(t.path))[0]
        labels.append(job if jobs.count(job) == 1 else stem if stem.startswith(job) else f"{job}-{stem}")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label}-{seen[label]}"
    return labels


def _title(t: Trace) -> str:
    job = job_fields(t)
    running = "" if t.status == "complete" else f", {t.status} after {t.rounds} rounds"
    return (f"{t.job}: {job['dataset']} {job['partition']}, {t.num_workers} workers, sync every "
            f"{job['sync every']}, {job['redistribution']}{running}")


def write_plots(traces: Sequence[Trace], folder: str) -> list[str]:
    """Write every figure of every trace into folder; returns the paths written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create plot folder {folder}: {exc.strerror}") from None
    import numpy as np
    paths: list[str] = []
    for t, label in zip(traces, labels(traces)):
        if t.rounds == 0:
            sys.stderr.write(f"fedmpi: {t.path} has no complete round yet; no figures for it\n")
            continue
        figures = [(f"{label}-accuracy.png", _accuracy_figure(t))]
        for est in t.mi:
            if latest_mi(t, est)[0] is None:
                continue
            figures.append((f"{label}-mi-{est}.png", _mi_figure(t, est)))
            if not all(np.isnan(t.mi[est][f"xz_{m}"]).all() for m in MODELS):  # decoders: I(Z;Y) only
                figures.append((f"{label}-infoplane-{est}.png", _infoplane_figure(t, est)))
        if t.comm and "bytes_up" in t.comm:
            figures.append((f"{label}-communication.png", _communication_figure(t)))
        if t.divergence:
            figures.append((f"{label}-divergence.png", _divergence_figure(t)))
        # Label histograms of non-iid splits (an iid split's are flat).
        if t.label_counts is not None and setting(t, "data.partition", "iid") != "iid":
            figures.append((f"{label}-labels.png", _labels_figure(t)))
        paths += _save(folder, figures)
    measured = [t for t in traces if t.rounds and t.comm and "bytes_up" in t.comm]
    if len(measured) > 1:
        paths += _save(folder, [("compare-accuracy-bits.png", _accuracy_bits_figure(measured))])
    return paths


def _save(folder: str, figures) -> list[str]:
    paths = []
    for name, fig in figures:
        path = os.path.join(folder, name)
        try:
            fig.savefig(path, dpi=110)
        except OSError as exc:
            raise UsageError(f"cannot write figure {path}: {exc.strerror}") from None
        paths.append(path)
    return paths


def _cumulative_uplink_bits(t: Trace):
    """(R,) bits per model parameter that all workers' update messages carried until each row.

    A row stands for the sync points since the previous one (trace.every), each of
    which sent `update_bits`; start-up, reports and checkpoints are left out (they
    are in /comm/bytes_up, and the same for every compressor)."""
    import numpy as np
    sync_points = np.diff(np.concatenate([[-1], t.index]))
    return np.cumsum(t.comm["update_bits"] * sync_points)


def _communication_figure(t: Trace):
    """Left: bits per parameter each logged sync point sent up (all workers) and, with
    compression.measure_distortion, the rate-distortion limit R_sum at the distortion reached.
    Right: test accuracy against the bits sent up so far."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator
    fig, axes = _figure(1, 2, 12, 4.4)
    sync_point = t.index + 1
    ax = axes[0, 0]
    ax.plot(sync_point, t.comm["update_bits"], marker="o", markersize=4, label="sent (whole messages)")
    limit = t.comm["rd_limit_bits"]
    if np.isfinite(limit).any():
        ax.plot(sync_point, limit, marker="s", markersize=4, linestyle="--", color="tab:red",
                label="R_sum at the measured distortion (Gaussian CEO)")
    ax.set_yscale("log")
    ax.set_xlabel("sync point")
    ax.set_ylabel("bits per parameter, all workers")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("update bits per sync point")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    ax = axes[0, 1]
    ax.plot(_cumulative_uplink_bits(t), t.metrics["test_acc"], marker="D", markersize=4, color="black")
    ax.set_xlabel("update bits sent up so far per parameter (all workers)")
    ax.set_ylabel("test accuracy (averaged model)")
    ax.set_title("accuracy against communication")
    ax.grid(alpha=0.3)
    fig.suptitle(f"Communication, {compression_label(t)}\n{_title(t)}")
    return fig


def _divergence_figure(t: Trace):
    """Heat maps, tensor (layer) by sync point: relative divergence and drift diversity."""
    import numpy as np
    fig, axes = _figure(1, 2, 13, 0.28 * len(t.layers) + 2.4)
    sync_point = t.index + 1
    for ax, (name, what, scale) in zip(axes[0], (
            ("relative", "relative divergence D_l = mean_k ||W_l^k - mean W_l|| / ||mean W_l||", "log"),
            ("drift_diversity", "drift diversity xi_l = sum_k ||m_l^k||^2 / ||sum_k m_l^k||^2", "log"))):
        values = t.divergence[name].T  # (L, R)
        finite = values[np.isfinite(values) & (values > 0)]
        import matplotlib.colors as mcolors
        norm = mcolors.LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
        image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", interpolation="nearest", norm=norm,
                          cmap="magma", extent=(sync_point[0] - 0.5, sync_point[-1] + 0.5, len(t.layers) - 0.5,
                                                -0.5))
        ax.set_yticks(range(len(t.layers)), t.layers, fontsize="small")
        ax.set_xlabel("sync point")
        ax.set_title(what, fontsize="medium")
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"Per-layer divergence across workers (layers in model order, input first)\n{_title(t)}")
    return fig


def _accuracy_bits_figure(traces: Sequence[Trace]):
    """Test accuracy against cumulative uplink bits, one line per trace: how users pick a compressor."""
    fig, axes = _figure(1, 1, 8, 5)
    ax = axes[0, 0]
    for t, label in zip(traces, labels(traces)):
        ax.plot(_cumulative_uplink_bits(t), t.metrics["test_acc"], marker="o", markersize=3,
                label=f"{label}: {compression_label(t)}")
    ax.set_xscale("log")
    ax.set_xlabel("update bits sent up so far per parameter (all workers)")
    ax.set_ylabel("test accuracy (averaged model)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    fig.suptitle("Test accuracy against communication")
    return fig


def _labels_figure(t: Trace):
    """Each client's training examples per label, stacked by label, clients on the x axis."""
    import numpy as np
    counts = t.label_counts  # (C, K)
    fig, axes = _figure(1, 1, max(10.0, 0.5 * len(counts) + 3), 4.4)
    ax = axes[0, 0]
    clients = np.arange(len(counts))
    colors = [f"C{k % 10}" for k in range(counts.shape[1])]
    bottom = np.zeros(len(counts))
    for k in range(counts.shape[1]):
        ax.bar(clients, counts[:, k], bottom=bottom, color=colors[k], label=f"label {k}",
               hatch="//" if k >= 10 else None)
        bottom += counts[:, k]
    owner = t.client_owner if t.client_owner is not None else clients
    ax.set_xticks(clients, [f"{c + 1}\nw{int(owner[c]) + 1}" for c in clients])
    ax.set_xlabel("client (and its worker)")
    ax.set_ylabel("training examples")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.suptitle(f"Training examples per label\n{_title(t)}")
    return fig


def _figure(rows: int, cols: int, width: float, height: float):
    # A bare Figure renders with Agg without touching pyplot's global state.
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _mi_figure(t: Trace, est: str):
    """The paper's Figures 1-4: per worker, I(X;Z) left and I(Z;Y) right at each sync point.

    On the I(Z;Y) side, the band [Fano, H(Y)] of each model (shaded) and its head bound
    H(Y) - CE (dotted), where the trace has them; error bars are standard errors."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator
    W = t.num_workers
    values = t.mi[est]
    sides = (("xz", "I(X;Z)"), ("zy", "I(Z;Y)"))
    if all(np.isnan(values[f"xz_{m}"]).all() for m in MODELS):  # decoders: I(Z;Y) only, one column
        sides = sides[1:]
    fig, axes = _figure(W, len(sides), 11 if len(sides) == 2 else 9, 2.6 * W + 1.2)
    sync_point = t.index + 1
    for k in range(W):
        for c, (side, what) in enumerate(sides):
            ax = axes[k, c]
            for model in MODELS:
                y = values[f"{side}_{model}"][:, k]
                se = t.mi_se[est][f"{side}_{model}"][:, k]
                ok = ~np.isnan(y)  # rounds skipped by mi.every or not estimated yet
                ax.errorbar(sync_point[ok], y[ok], yerr=np.nan_to_num(se[ok]), color=_MODEL_COLOR[model],
                            label=f"{model} model", markersize=4, capsize=2, **_MODEL_STYLE[model])
                if side == "zy" and t.bounds:
                    fano, head = t.bounds[f"fano_{model}"][:, k], t.bounds[f"head_{model}"][:, k]
                    upper = t.bounds["entropy"][:, k]
                    has = ~np.isnan(fano)
                    ax.fill_between(sync_point[has], fano[has], upper[has], color=_MODEL_COLOR[model],
                                    alpha=0.12, linewidth=0, label=f"[Fano, H(Y)], {model}")
                    ax.plot(sync_point[has], head[has], color=_MODEL_COLOR[model], linestyle=":",
                            linewidth=1.2, label=f"head H(Y)-CE, {model}")
            if side == "xz" and not np.any(~np.isnan(values["xz_local"][:, k])) \
                    and not np.any(~np.isnan(values["xz_averaged"][:, k])):
                ax.text(0.5, 0.5, f"{est} does not estimate I(X;Z)", transform=ax.transAxes,
                        ha="center", va="center", color="grey")
            ax.set_title(f"worker {k + 1} (local dataset {k + 1}): {what}")
            ax.set_ylabel(f"{what} [nats]")
            ax.set_xlabel("sync point")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
    layout = "X left, Y right" if len(sides) == 2 else "I(Z;Y) only"
    fig.suptitle(f"Mutual information ({est_label(t, est)}), {layout}\n{_title(t)}"
                 f"{_what(t, est, sides=tuple(side for side, _ in sides))}")
    return fig


def _what(t: Trace, est: str, sides: tuple[str, ...] = ("xz", "zy")) -> str:
    """What the estimator's two numbers are (its `what_*` attributes, schema 2), for titles."""
    import textwrap
    params = t.mi_params.get(est, {})
    lines = [f"{side}: {params[f'what_{side}']}" for side in sides if f"what_{side}" in params]
    return "".join("\n" + textwrap.shorten(line, 110) for line in lines)


def _accuracy_figure(t: Trace):
    """Accuracy and loss vs local step: local models on own shard, averaged on each shard, test."""
    import matplotlib
    fig, axes = _figure(1, 2, 12, 4.6)
    colors = matplotlib.colormaps["tab10"]
    for c, (kind, ylabel) in enumerate((("acc", "accuracy"), ("loss", "cross-entropy loss [nats]"))):
        ax = axes[0, c]
        test = t.metrics.get(f"test_{kind}")
        if test is not None:
            ax.plot(t.step, test, color="black", linewidth=2.2, marker="D", markersize=4,
                    label="averaged model, test set")
        for k in range(t.num_workers):
            color = colors(k % 10)
            for model in MODELS:
                values = t.metrics.get(f"{model}_{kind}")
                if values is not None:
                    ax.plot(t.step, values[:, k], color=color, markersize=3,
                            label=f"{model} model, shard {k}", **_MODEL_STYLE[model])
        ax.set_xlabel("local step (batches per worker)")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" [")[0])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Accuracy and loss (local: before averaging)\n{_title(t)}")
    return fig


def _infoplane_figure(t: Trace, est: str):
    """Information plane: I(X;Z) vs I(Z;Y) per worker, coloured by sync point, marker = model."""
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    W = t.num_workers
    cols = min(W, 3)
    rows = -(-W // cols)
    fig, axes = _figure(rows, cols, 5.2 * cols + 1, 4.4 * rows + 0.8)
    sync_point = t.index + 1
    norm = matplotlib.colors.Normalize(vmin=1, vmax=max(int(sync_point[-1]), 2))
    cmap = matplotlib.colormaps["viridis"]
    values = t.mi[est]
    for k in range(rows * cols):
        ax = axes[k // cols, k % cols]
        if k >= W:
            ax.set_visible(False)
            continue
        for model in MODELS:
            x, y = values[f"xz_{model}"][:, k], values[f"zy_{model}"][:, k]
            ok = ~(np.isnan(x) | np.isnan(y))
            ax.plot(x[ok], y[ok], color="grey", linewidth=0.7, alpha=0.5,
                    linestyle=_MODEL_STYLE[model]["linestyle"])
            ax.scatter(x[ok], y[ok], c=sync_point[ok], cmap=cmap, norm=norm, s=36,
                       marker=_MODEL_STYLE[model]["marker"], edgecolors="black", linewidths=0.4)
        ax.set_xlabel("I(X;Z) [nats]")
        ax.set_ylabel("I(Z;Y) [nats]")
        ax.set_title(f"worker {k + 1} (local dataset {k + 1})")
        ax.grid(alpha=0.3)
        ax.legend(handles=[Line2D([], [], color="grey", markerfacecolor="white", markeredgecolor="black",
                                  label=f"{model} model", **_MODEL_STYLE[model]) for model in MODELS],
                  loc="best", fontsize="small")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
                       label="sync point")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    fig.suptitle(f"Information plane ({est_label(t, est)})\n{_title(t)}{_what(t, est)}")
    return fig
