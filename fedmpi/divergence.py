"""Per-layer divergence of the workers' models at a sync point (`trace.divergence: true`).

Two numbers per tensor l of the flat layout (fedmpi.flat, every parameter
and floating buffer, in layout order), over the K workers that trained in
the round (a worker none of whose clients was sampled has no local model):

    relative divergence   D_l  = mean_k ||W_l^k - mean_j W_l^j|| / ||mean_j W_l^j||
    drift diversity       xi_l = sum_k ||m_l^k||^2 / ||sum_k m_l^k||^2

W^k is worker k's model after its local steps and m^k = W^k - (the model it
started the round from) its update over the round, as in
../papers/neighbours.md ("divergence accumulation"; the drift diversity of
FedPVR's analysis): D_l is 0 when the workers agree and grows as they drift
apart; xi_l is 1/K when every worker moved the same way, 1 for orthogonal
updates and large when the updates cancel. NaN where a denominator is 0 (a
tensor that is 0 on average, or updates that cancel exactly) or fewer than
one worker trained.

The workers' models reach the coordinator in a gather of their own at logged
sync points, counted as diagnostic bytes (/comm/diagnostic_bytes), because
an Allreduce of the average never shows them. Pure numpy, float64.
"""

from __future__ import annotations

import numpy as np


def layer_divergence(models: np.ndarray, updates: np.ndarray,
                     slots) -> tuple[np.ndarray, np.ndarray]:
    """(relative (L,), drift_diversity (L,)) float64 from models and updates (W, P).

    Rows with NaN (workers that did not train) are left out; slots: the flat
    layout's fedmpi.flat.Slot per tensor (offset, numel)."""
    trained = ~np.isnan(models).any(axis=1)
    w = models[trained].astype(np.float64)  # (K, P)
    m = updates[trained].astype(np.float64)
    relative = np.full(len(slots), np.nan)
    diversity = np.full(len(slots), np.nan)
    if len(w) == 0:
        return relative, diversity
    for l, slot in enumerate(slots):
        cut = slice(slot.offset, slot.offset + slot.numel)
        wl, ml = w[:, cut], m[:, cut]
        mean = wl.mean(axis=0)
        norm = np.linalg.norm(mean)
        if norm > 0:
            relative[l] = np.linalg.norm(wl - mean, axis=1).mean() / norm
        total = np.linalg.norm(ml.sum(axis=0)) ** 2
        if total > 0:
            diversity[l] = (ml * ml).sum() / total
    return relative, diversity
