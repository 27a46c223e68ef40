"""Table-6 baselines: clustering dense tokens and naming the clusters by text."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans, SpectralClustering

from freeseg.ops.clustering import cluster_segmentation, cluster_tokens

EYE = np.eye(6)


def _three_regions() -> tuple[np.ndarray, np.ndarray]:
    """A 4x6 grid: columns 0-1 along e0, 2-3 along e1, 4-5 along e2, with tiny e3/e4 noise."""
    rng = np.random.default_rng(0)
    region = np.repeat(np.arange(3), 2)[None].repeat(4, axis=0)  # (4, 6) in {0, 1, 2}
    tokens = 3.0 * EYE[region.reshape(-1)]  # unnormalised on purpose
    tokens[:, 3:5] += 0.05 * rng.standard_normal((24, 2))
    return tokens, region


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_separated_groups_get_the_class_of_their_text(method):
    tokens, region = _three_regions()
    text = EYE[[1, 0, 2]]  # class 0 ↔ e1, class 1 ↔ e0, class 2 ↔ e2
    seg = cluster_segmentation(tokens, (4, 6), text, 3, method, None, seed=0)
    expected = np.array([2, 1, 3])[region]  # label c + 1, hand-mapped
    assert seg.dtype == np.int64 and seg.shape == (4, 6)
    np.testing.assert_array_equal(seg, expected)


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
def test_cluster_far_from_every_text_becomes_background(method):
    tokens, region = _three_regions()
    text = EYE[[0, 1]]  # nothing names the e2 region: its best cosine ≈ 0, the others ≈ 1
    seg = cluster_segmentation(tokens, (4, 6), text, 3, method, 0.5, seed=0)
    np.testing.assert_array_equal(seg, np.array([1, 2, 0])[region])


def test_equal_scores_keep_every_cluster_and_names_reduce_by_max():
    tokens, region = _three_regions()
    tokens[:, 3:5] = 0.0  # every cluster matches its text exactly: span 0 → all foreground
    text = EYE[[0, 5, 1, 2]]
    owner = np.array([0, 1, 1, 2])  # class 1 has two names: e5 (unused) and e1
    seg = cluster_segmentation(tokens, (4, 6), text, 3, "kmeans", 0.9, seed=0, owner=owner)
    np.testing.assert_array_equal(seg, np.array([1, 2, 3])[region])


def _reference_map(tokens, grid, text, k, method, background, seed) -> np.ndarray:
    """The documented recipe written out: scikit-learn on the L2-normalised tokens, then each
    cluster named by a loop over its mean direction and the classes."""
    feats = tokens / np.linalg.norm(tokens, axis=1, keepdims=True)
    if method == "kmeans":
        assign = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(feats)
    else:
        assign = SpectralClustering(
            n_clusters=k,
            affinity="nearest_neighbors",
            n_neighbors=10,
            assign_labels="kmeans",
            random_state=seed,
        ).fit_predict(feats)
    names, scores = {}, {}
    for j in np.unique(assign):
        mean = feats[assign == j].mean(0)
        mean /= np.linalg.norm(mean)
        cosines = [float(mean @ t) for t in text]
        names[j], scores[j] = 1 + int(np.argmax(cosines)), max(cosines)
    lo, hi = min(scores.values()), max(scores.values())
    out = np.zeros(len(assign), np.int64)
    for n, j in enumerate(assign):
        out[n] = 0 if (scores[j] - lo) / (hi - lo) < background else names[j]
    return out.reshape(grid)


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
@pytest.mark.parametrize("seed", [7, 8])
def test_random_tokens_match_the_written_out_recipe(method, seed):
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((64, 8))
    text = rng.standard_normal((5, 8))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    got = cluster_segmentation(tokens, (8, 8), text, 4, method, 0.5, seed=seed)
    expected = _reference_map(tokens, (8, 8), text, 4, method, 0.5, seed)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got)) >= 2  # background and at least one class: a map worth checking
    np.testing.assert_array_equal(
        got, cluster_segmentation(tokens, (8, 8), text, 4, method, 0.5, seed=seed)
    )


@pytest.mark.parametrize("method", ["kmeans", "spectral"])
@pytest.mark.parametrize("k", [2, 5, 50])
def test_k_above_distinct_tokens_is_capped(method, k):
    tokens = EYE[[0, 0, 0, 1, 1, 1]]  # 2 distinct tokens, 6 in all
    assign = cluster_tokens(tokens, k, method, seed=0)
    assert len(np.unique(assign)) == 2
    assert len(set(assign[:3])) == 1 and len(set(assign[3:])) == 1
    seg = cluster_segmentation(tokens, (2, 3), EYE[[1, 0]], k, method, None, seed=0)
    np.testing.assert_array_equal(seg, [[2, 2, 2], [1, 1, 1]])


def test_single_distinct_token_is_one_foreground_cluster():
    seg = cluster_segmentation(np.ones((4, 3)), (2, 2), EYE[:2, :3], 4, "spectral", 0.5, 0)
    np.testing.assert_array_equal(seg, np.ones((2, 2)))


def test_token_count_must_fill_the_grid():
    with pytest.raises(ValueError, match="grid"):
        cluster_segmentation(np.ones((5, 3)), (2, 2), EYE[:2, :3], 2, "kmeans", None, 0)
