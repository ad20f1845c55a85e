"""Softmax cross-entropy on the (dequantised) logits: the training loss. Not a graph op: autodiff
appends it after the classifier as a `loss_softmax_ce` step."""
from __future__ import annotations

import numpy as np

from . import c_sums


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, sums: str = "numpy"):
    """Mean loss over the batch and d loss / d logits, float32.

    logits (N, K) real values, labels (N,) ints. grad = (softmax - onehot) / N. sums="c": the C kernels' exp
    and sum order (ops/c_sums.py), so the gradient is theirs bit for bit.
    """
    z = logits.astype(np.float32)
    z = z - z.max(axis=1, keepdims=True)
    if sums == "c":
        e = c_sums.exp_nonpos(z)
        total = c_sums.sequential_rows(e.T)
    else:
        e = np.exp(z)
        total = e.sum(axis=1)
    p = e / total[:, None]
    n = len(labels)
    idx = np.arange(n)
    logp = z[idx, labels] - np.log(total)
    loss = float(-logp.mean())
    grad = p.copy()
    grad[idx, labels] -= 1
    return loss, (grad / np.float32(n)).astype(np.float32)


def grad_int8_logits(q: np.ndarray, labels: np.ndarray, scale: float, zero_point: int, sums: str = "numpy"):
    """Loss on real logits (q - z) * s, and its gradient w.r.t. the int8 codes q: s * d loss / d real."""
    real = (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    loss, g = softmax_cross_entropy(real, labels, sums)
    return loss, g * np.float32(scale)
