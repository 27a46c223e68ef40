"""Dense CRF post-processing: closed-form expectations on flat-colour images, and its pool."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from freeseg.ops.crf import DenseCRFPool, dense_crf


def _halves(h: int = 24, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A red left half and a blue right half; truth 0 on the left, 1 on the right."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2 :] = (30, 30, 200)
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1
    return image, truth


def _noisy_probs(truth: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """(2, H, W) probabilities favouring the true class (0.65) on ``accuracy`` of the pixels,
    the wrong class (0.65) elsewhere."""
    rng = np.random.default_rng(seed)
    favoured = np.where(rng.random(truth.shape) < accuracy, truth, 1 - truth)
    p1 = np.where(favoured == 1, 0.65, 0.35)
    return np.stack([1 - p1, p1]).astype(np.float32)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[labels].transpose(2, 0, 1).copy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_cleans_noise_on_flat_halves(seed):
    image, truth = _halves()
    probs = _noisy_probs(truth, 0.7, seed)
    argmax_acc = (probs.argmax(0) == truth).mean()
    crf_acc = (dense_crf(image, probs) == truth).mean()
    assert 0.6 < argmax_acc < 0.8
    assert crf_acc > argmax_acc + 0.15
    assert crf_acc > 0.95


def test_one_hot_probabilities_are_kept_where_regions_outsize_the_kernel():
    # -log(1e-5) ≈ 11.5 per wrong label, while the normalised kernels weigh at most 3 + 10: a
    # one-hot label survives unless (nearly) its whole neighbourhood disagrees with it.
    image, truth = _halves()
    labels = truth.copy()
    labels[12:, :] = 2 - labels[12:, :]  # a split the colours do not show
    labels[2:12, 30:36] = 0  # a block of class 0 on the blue half
    np.testing.assert_array_equal(dense_crf(image, _one_hot(labels, 3)), labels)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, image.shape).astype(np.uint8)
    random_labels = rng.integers(0, 4, truth.shape)
    np.testing.assert_array_equal(dense_crf(noise, _one_hot(random_labels, 4)), random_labels)


def test_one_pixel_island_in_a_flat_region_is_removed():
    image, truth = _halves()
    labels = truth.copy()
    labels[5, 5] = 2
    np.testing.assert_array_equal(dense_crf(image, _one_hot(labels, 3)), truth)


def test_bad_inputs_name_the_argument():
    image, truth = _halves(8, 8)
    probs = _one_hot(truth, 2)
    with pytest.raises(ValueError, match="probs"):
        dense_crf(image, probs[:, :4])
    with pytest.raises(ValueError, match="image"):
        dense_crf(image[..., :2], probs)
    with pytest.raises(ValueError, match="image"):
        dense_crf(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(image, probs, iterations=0)
    with DenseCRFPool(workers=2) as pool, pytest.raises(ValueError, match="probs"):
        pool.submit(image, probs[:, :3])  # refused in the caller, before any worker


class _RecordingExecutor(ProcessPoolExecutor):
    """The CRF's process pool, recording every construction and its start method."""

    made: list[str] = []

    def __init__(self, *args, **kwargs):
        context = kwargs.get("mp_context") or multiprocessing.get_context()
        type(self).made.append(context.get_start_method())
        super().__init__(*args, **kwargs)


@pytest.fixture
def recording_pool(monkeypatch):
    _RecordingExecutor.made = []
    monkeypatch.setattr("freeseg.ops.crf.ProcessPoolExecutor", _RecordingExecutor)
    yield _RecordingExecutor.made
    assert multiprocessing.active_children() == []  # every worker has exited


def _varied_inputs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Four images of three sizes, with noisy 2- and 3-class probabilities."""
    out = []
    for seed, (h, w) in enumerate([(16, 20), (24, 48), (16, 20), (9, 31)]):
        image, truth = _halves(h, w)
        probs = _noisy_probs(truth, 0.7, seed)
        if seed % 2:
            probs = np.concatenate([probs * 0.9, np.full((1, h, w), 0.1, np.float32)])
        out.append((image, probs))
    return out


def test_pool_labels_equal_in_process_dense_crf_exactly(recording_pool):
    inputs = _varied_inputs()
    params = {"iterations": 5, "scale_factor": 2.0}
    with DenseCRFPool(workers=2, max_pending=2, **params) as pool:
        futures = [pool.submit(image, probs) for image, probs in inputs]
        labels = [future.result() for future in futures]
    for (image, probs), label in zip(inputs, labels, strict=True):
        expected = dense_crf(image, probs, **params)  # this process, pydensecrf directly
        assert label.dtype == np.int64 and label.shape == image.shape[:2]
        np.testing.assert_array_equal(label, expected)
    assert len(recording_pool) == 1  # one pool for all images, not one per call


def test_pool_workers_start_without_fork(recording_pool):
    image, truth = _halves(8, 10)
    probs = [_noisy_probs(truth, 0.7, s) for s in range(2)]
    with DenseCRFPool(workers=2) as pool:
        labels = [future.result() for future in [pool.submit(image, p) for p in probs]]
    assert all(label.shape == (8, 10) for label in labels)
    assert recording_pool and "fork" not in recording_pool  # forkserver or spawn


def test_in_process_pool_starts_no_process(recording_pool):
    image, truth = _halves(8, 10)
    probs = _noisy_probs(truth, 0.7, 0)
    pool = DenseCRFPool(workers=0)
    future = pool.submit(image, probs)
    assert future.done() and multiprocessing.active_children() == []
    np.testing.assert_array_equal(future.result(), dense_crf(image, probs))
    pool.close()
    assert recording_pool == []
    with pytest.raises(ValueError, match="probs"):
        pool.submit(image, probs[:, :4])


def test_crf_module_imports_without_torch():
    # the workers import freeseg.ops.crf: without torch they start in a fraction of a second
    code = "import sys, freeseg.ops.crf; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
