"""Splitting a training set over simulated clients: IID, or non-IID by a Dirichlet prior over classes.

`dirichlet:A` (Hsu et al. 2019, the usual non-IID benchmark): for each class, the share of its images each
client gets is drawn from Dirichlet(A, ..., A); small A gives each client a few dominant classes. Both
splits are reproducible by seed, every image goes to exactly one client, and no client is left empty
(an empty client is given one image from the largest, so a Dirichlet draw never yields an idle device).
"""
from __future__ import annotations

import numpy as np

from ..errors import MicrotrainError

FORMS = "iid | dirichlet:A (A > 0, e.g. dirichlet:0.5)"


def parse_partition(text: str) -> tuple[str, float | None]:
    kind, _, arg = str(text).partition(":")
    if kind == "iid" and not arg:
        return "iid", None
    if kind == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            alpha = float("nan")
        if np.isfinite(alpha) and alpha > 0:
            return "dirichlet", alpha
    raise MicrotrainError(f"--partition {text!r}: expected {FORMS}")


def partition(labels: np.ndarray, n_clients: int, how: str = "iid", seed: int = 0) -> list[np.ndarray]:
    """Sorted index arrays, one per client, covering every sample once."""
    kind, alpha = parse_partition(how)
    labels = np.asarray(labels)
    n = len(labels)
    if not 1 <= n_clients <= n:
        raise MicrotrainError(f"cannot split {n} samples over {n_clients} clients (1..{n})")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, n_clients])
    owner = np.empty(n, dtype=np.int64)
    if kind == "iid":
        owner[rng.permutation(n)] = np.arange(n) % n_clients
    else:
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(n_clients, alpha))
            cuts = np.round(np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                owner[part] = k
        counts = np.bincount(owner, minlength=n_clients)
        for k in np.flatnonzero(counts == 0):  # give an empty client one image of the largest
            big = int(np.argmax(counts))
            owner[rng.choice(np.flatnonzero(owner == big))] = k
            counts[big] -= 1
            counts[k] += 1
    return [np.flatnonzero(owner == k) for k in range(n_clients)]
