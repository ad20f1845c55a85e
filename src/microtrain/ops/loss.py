"""Softmax cross-entropy on the (dequantised) logits: the training loss. Not a graph op: autodiff
appends it after the classifier as a `loss_softmax_ce` step."""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """Mean loss over the batch and d loss / d logits, float32.

    logits (N, K) real values, labels (N,) ints. grad = (softmax - onehot) / N.
    """
    z = logits.astype(np.float32)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    n = len(labels)
    idx = np.arange(n)
    logp = z[idx, labels] - np.log(e.sum(axis=1))
    loss = float(-logp.mean())
    grad = p.copy()
    grad[idx, labels] -= 1
    return loss, (grad / np.float32(n)).astype(np.float32)


def grad_int8_logits(q: np.ndarray, labels: np.ndarray, scale: float, zero_point: int):
    """Loss on real logits (q - z) * s, and its gradient w.r.t. the int8 codes q: s * d loss / d real."""
    real = (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    loss, g = softmax_cross_entropy(real, labels)
    return loss, g * np.float32(scale)
