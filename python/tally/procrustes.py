"""Orthogonal Procrustes: the rotation that best maps one set of vectors onto another (pure numpy, no Spark).

A retrained embedding is only defined up to rotation (and, for ALS, more): the same structure comes back in other
coordinates, so a downstream model's inputs would move at every retrain though nothing changed. Rotating each new
snapshot onto the previous one, on the entities both know, keeps the coordinates still. A rotation keeps norms
and cosines, so neighbours and similarities are exactly what the raw vectors give.

    R = argmin_{R orthogonal} ||A R - B||_F  =  U V^T, where U S V^T = svd(A^T B)

A and B are n x d (n shared entities), so the SVD is of a d x d matrix: cheap; the cost is collecting the vectors
to the driver (docs/embeddings.md, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    rotation: np.ndarray  # d x d, orthogonal
    shared: int  # entities both snapshots know
    residual: float  # ||A R - B|| / ||B|| on the shared entities, after rotation
    raw_residual: float  # ||A - B|| / ||B||, before: how far the retrain had turned the vectors


def align(new: np.ndarray, previous: np.ndarray) -> Alignment:
    """The rotation of `new` (rows: the shared entities' new vectors) onto `previous` (the same entities' old
    vectors, same row order), in float64."""
    a, b = np.asarray(new, dtype=np.float64), np.asarray(previous, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"align: shapes {a.shape} and {b.shape} differ")
    u, _, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt
    norm = float(np.linalg.norm(b)) or 1.0
    return Alignment(rotation, a.shape[0], float(np.linalg.norm(a @ rotation - b)) / norm,
                     float(np.linalg.norm(a - b)) / norm)
