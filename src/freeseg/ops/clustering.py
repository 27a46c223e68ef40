"""Table-6 baselines: parameter-free grouping of dense tokens, clusters labelled by text.

"CLIP + K-means / spectral clustering" (paper Table 6, as GroupViT implemented them): the
dense output tokens of one image are grouped without learned parameters, and each group is
named by the class whose text embedding is closest to the group's mean token. Plain numpy +
scikit-learn, one image at a time; no torch, no Lightning.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans, SpectralClustering

from freeseg.ops import CONSTANT_SPAN

__all__ = ["ClusterMethod", "cluster_segmentation", "cluster_tokens"]

ClusterMethod = Literal["kmeans", "spectral"]
_NEIGHBORS = 10


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cluster_tokens(tokens: np.ndarray, k: int, method: ClusterMethod, seed: int) -> np.ndarray:
    """Group ``(N, D)`` L2-normalised tokens into at most ``k`` clusters → ``(N,)`` int64.

    ``k`` is capped at the number of distinct tokens (so duplicated or too few tokens never
    ask scikit-learn for more clusters than points). K-means: ``KMeans(n_init=3)``; spectral:
    ``SpectralClustering`` on a symmetric k-nearest-neighbour graph (10 neighbours, fewer for
    tiny images), both seeded by ``seed``. Cluster ids are arbitrary, in ``[0, k)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = tokens.shape[0]
    distinct = np.unique(np.round(tokens, 6), axis=0).shape[0]
    k = min(k, distinct)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():
        # disconnected kNN graphs (well-separated groups) are expected, not an error
        warnings.simplefilter("ignore")
        if method == "kmeans":
            model = KMeans(n_clusters=k, n_init=3, random_state=seed)
            labels = model.fit_predict(tokens)
        elif method == "spectral":
            neighbors = max(1, min(_NEIGHBORS, n - 1))
            model = SpectralClustering(
                n_clusters=k,
                affinity="nearest_neighbors",
                n_neighbors=neighbors,
                assign_labels="kmeans",
                random_state=seed,
            )
            labels = model.fit_predict(tokens)
        else:
            raise ValueError(f"unknown clustering method {method!r}")
    return np.asarray(labels, dtype=np.int64)


def cluster_segmentation(
    tokens: np.ndarray,
    grid: tuple[int, int],
    text: np.ndarray,
    k: int,
    method: ClusterMethod,
    background: float | None,
    seed: int,
    owner: np.ndarray | None = None,
) -> np.ndarray:
    """Label map of one image by clustering its dense tokens and naming the clusters by text.

    1. The tokens are L2-normalised and grouped into ``k`` clusters (:func:`cluster_tokens`).
    2. Each cluster j gets the mean of its normalised tokens, re-normalised, m_j; its class is
       c_j = argmax_c cos(m_j, t_c) and its score s_j = max_c cos(m_j, t_c).
    3. Background rule (cluster-level analogue of Eq. 7's constant map B = t): the scores are
       min-max normalised over the image's clusters, ŝ_j = (s_j − min s) / (max s − min s), and
       cluster j is background iff ŝ_j < ``background``. With one cluster, or all s_j equal
       (span <= ``CONSTANT_SPAN`` = 1e-6), every ŝ_j = 1; ``background=None`` keeps every
       cluster foreground.

    Args:
        tokens: ``(N, D)`` float dense tokens of one image, N = h·w, row-major.
        grid: ``(h, w)`` token grid.
        text: ``(T, D)`` L2-normalised text embeddings (one per class, or per class name when
            ``owner`` is given).
        k: number of clusters (capped at the number of distinct tokens).
        method: ``"kmeans"`` or ``"spectral"``.
        background: threshold in [0, 1] on the normalised cluster score, or ``None``.
        seed: random state of the clustering.
        owner: ``(T,)`` int class of each text row (several names per class: max over names);
            default ``arange(T)``.

    Returns:
        ``(h, w)`` int64 labels: 0 = background, c + 1 = class c.
    """
    h, w = grid
    if tokens.shape[0] != h * w:
        raise ValueError(f"{tokens.shape[0]} tokens do not fill a {h}x{w} grid")
    feats = _l2_normalize(np.asarray(tokens, dtype=np.float64))
    text = np.asarray(text, dtype=np.float64)
    owner = np.arange(text.shape[0]) if owner is None else np.asarray(owner)
    num_classes = int(owner.max()) + 1
    assign = cluster_tokens(feats, k, method, seed)
    ids = np.unique(assign)
    means = _l2_normalize(np.stack([feats[assign == j].mean(axis=0) for j in ids]))
    sim_names = means @ text.T  # (K, T)
    sim = np.full((len(ids), num_classes), -np.inf)
    for t, c in enumerate(owner):
        sim[:, c] = np.maximum(sim[:, c], sim_names[:, t])
    best, score = sim.argmax(axis=1), sim.max(axis=1)
    label = best + 1
    if background is not None:
        span = score.max() - score.min()
        norm = (score - score.min()) / span if span > CONSTANT_SPAN else np.ones_like(score)
        label = np.where(norm < background, 0, label)
    lookup = np.zeros(int(assign.max()) + 1, dtype=np.int64)
    lookup[ids] = label
    return lookup[assign].reshape(h, w)
