"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011), as the paper applies to Y_seg2.

The energy is E(y) = Σ_i ψ_u(y_i) + Σ_{i<j} μ(y_i, y_j) k(f_i, f_j) with the unary
ψ_u = −log p (the network's softmax), Potts compatibility μ and two Gaussian kernels:
a smoothness kernel w_g · exp(−|p_i − p_j|² / 2 sxy_g²) and an appearance (bilateral) kernel
w_b · exp(−|p_i − p_j|² / 2 sxy_b² − |I_i − I_j|² / 2 srgb²). Mean-field inference runs in
pydensecrf (``pydensecrf2``), whose kernels are normalised, so a unary gap above
w_g + w_b (13 with the defaults; −log 1e-5 ≈ 11.5 for a one-hot softmax) cannot be overturned.

Defaults are the settings almost every weakly supervised segmentation code base reuses
(AffinityNet/PSA ``crf_inference``, IRN, and WSSS projects built on mmseg): 10 iterations,
smoothness sxy 3, weight 3; bilateral sxy 80, srgb 13, weight 10 — chosen for PASCAL VOC's
~500 × 375 images. ``scale_factor`` divides both sxy values (AffinityNet's convention for
downscaled images).

This module imports no torch, so that the CRF worker processes (:class:`DenseCRFPool`) start in
a fraction of a second.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Literal

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

__all__ = ["DenseCRFPool", "dense_crf"]

StartMethod = Literal["forkserver", "spawn"]


def _check_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2] or probs.shape[0] < 1:
        raise ValueError(
            f"probs must have shape (K, H, W) = (K, {image.shape[0]}, {image.shape[1]}) "
            f"with K >= 1, got {probs.shape}"
        )
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probs must be finite and >= 0 (softmax probabilities)")


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    iterations: int = 10,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
    scale_factor: float = 1.0,
) -> np.ndarray:
    """Refine one image's class probabilities with a dense CRF; return its labels.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image the probabilities belong to.
        probs: ``(K, H, W)`` float softmax probabilities (each pixel's K values sum to 1).
        iterations: mean-field iterations, >= 1.
        gaussian_sxy: smoothness kernel position std (pixels, before ``scale_factor``).
        gaussian_compat: smoothness kernel weight w_g.
        bilateral_sxy: appearance kernel position std (pixels, before ``scale_factor``).
        bilateral_srgb: appearance kernel colour std (0–255 units).
        bilateral_compat: appearance kernel weight w_b.
        scale_factor: both position stds are divided by it, > 0.

    Returns:
        ``(H, W)`` int64 labels in [0, K).

    Raises:
        ValueError: for a wrong shape or dtype (naming the argument) or a non-positive setting.
    """
    image, probs = np.asarray(image), np.asarray(probs, dtype=np.float32)
    _check_inputs(image, probs)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if min(gaussian_sxy, bilateral_sxy, bilateral_srgb, scale_factor) <= 0:
        raise ValueError("gaussian_sxy, bilateral_sxy, bilateral_srgb, scale_factor must be > 0")
    k, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=gaussian_sxy / scale_factor, compat=gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=bilateral_sxy / scale_factor,
        srgb=bilateral_srgb,
        rgbim=np.ascontiguousarray(image),
        compat=bilateral_compat,
    )
    q = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(k, h, w)
    return q.argmax(0).astype(np.int64)


def _dense_crf_job(image: np.ndarray, probs: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return dense_crf(image, probs, **params)


def _start_context(start_method: StartMethod) -> multiprocessing.context.BaseContext:
    """The multiprocessing context of the pool; ``forkserver`` falls back to ``spawn`` where the
    platform lacks it (Windows). Never ``fork``: the caller may hold a CUDA context."""
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
    if start_method not in multiprocessing.get_all_start_methods():
        start_method = "spawn"
    return multiprocessing.get_context(start_method)


class DenseCRFPool:
    """:func:`dense_crf` on a persistent pool of worker processes, fed one image at a time.

    The pool is started on the first :meth:`submit` and lives until :meth:`close`: one pool
    serves a whole evaluation run, and the caller keeps working while the workers run the CRF.
    Workers are started with ``forkserver`` or ``spawn``, never ``fork`` (forking a process that
    holds CUDA is unsafe); a job needs only this module, which imports no torch. With ``spawn`` or
    ``forkserver`` a script that starts a pool needs the ``if __name__ == "__main__":`` guard.
    Results equal :func:`dense_crf` in the calling process exactly.

    Args:
        workers: worker processes; 0 runs each image in the calling process inside
            :meth:`submit` (no pool, the future is already done).
        start_method: ``forkserver`` (the server is started once per process, every later pool
            forks from it at once) or ``spawn``.
        max_pending: images submitted but not finished before :meth:`submit` waits for one
            (bounds the probabilities held in memory); default ``4 * workers``.
        **params: keyword settings of :func:`dense_crf`, shared by every image.
    """

    def __init__(
        self,
        workers: int = 2,
        start_method: StartMethod = "forkserver",
        max_pending: int | None = None,
        **params: Any,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: in-process), got {workers}")
        self.workers = workers
        self.context = _start_context(start_method) if workers else None
        self.max_pending = max_pending if max_pending is not None else 4 * workers
        if workers and self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")
        self.params = dict(params)
        self._executor: ProcessPoolExecutor | None = None
        self._pending: list[Future[np.ndarray]] = []

    def submit(self, image: np.ndarray, probs: np.ndarray) -> Future[np.ndarray]:
        """Queue one image; its future gives the ``(H, W)`` int64 labels of :func:`dense_crf`.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            probs: ``(K, H, W)`` float softmax probabilities.

        Raises:
            ValueError: for a wrong shape or dtype, in the caller rather than in a worker.
        """
        image, probs = np.asarray(image), np.asarray(probs, dtype=np.float32)
        _check_inputs(image, probs)
        if not self.workers:
            done: Future[np.ndarray] = Future()
            done.set_result(_dense_crf_job(image, probs, self.params))
            return done
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=self.context)
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= self.max_pending:
            wait(self._pending, return_when=FIRST_COMPLETED)
            self._pending = [f for f in self._pending if not f.done()]
        future = self._executor.submit(_dense_crf_job, image, probs, self.params)
        self._pending.append(future)
        return future

    def close(self, cancel: bool = False) -> None:
        """Stop the workers and wait for them to exit (idempotent). Unfinished images are
        finished first, or dropped with ``cancel`` (their futures are then cancelled)."""
        executor, self._executor, self._pending = self._executor, None, []
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> DenseCRFPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(cancel=exc_info[0] is not None)
