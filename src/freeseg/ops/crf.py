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
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pydensecrf.densecrf as dcrf
import torch
from pydensecrf.utils import unary_from_softmax

__all__ = ["dense_crf", "dense_crf_batch", "to_uint8_image"]


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


def _dense_crf_star(args: tuple[np.ndarray, np.ndarray, dict[str, Any]]) -> np.ndarray:
    image, probs, params = args
    return dense_crf(image, probs, **params)


def dense_crf_batch(
    images: Sequence[np.ndarray], probs: Sequence[np.ndarray], workers: int = 2, **params: Any
) -> list[np.ndarray]:
    """:func:`dense_crf` on many images, in ``workers`` processes (serial when ``workers <= 1``).

    Args:
        images: N arrays ``(H_i, W_i, 3)`` uint8.
        probs: N arrays ``(K, H_i, W_i)`` float.
        workers: worker processes; the pool is forked per call (no torch work in the children).
        **params: keyword settings of :func:`dense_crf`.

    Returns:
        N arrays ``(H_i, W_i)`` int64, in input order.
    """
    if len(images) != len(probs):
        raise ValueError(f"probs must hold one array per image ({len(images)}), got {len(probs)}")
    pairs = zip(images, probs, strict=True)
    jobs = [(np.asarray(i), np.asarray(p, dtype=np.float32), params) for i, p in pairs]
    for image, prob, _ in jobs:  # fail in the caller, not in a worker
        _check_inputs(image, prob)
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [_dense_crf_star(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_dense_crf_star, jobs))


def to_uint8_image(
    image_chw: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Undo the input normalisation: ``(3, H, W)`` normalised float → ``(H, W, 3)`` uint8 RGB.

    Args:
        image_chw: ``(3, H, W)`` float, ``(x / 255 − mean) / std``.
        mean, std: the three per-channel values the image was normalised with ([0, 1] units).
    """
    if image_chw.ndim != 3 or image_chw.shape[0] != 3:
        raise ValueError(f"image_chw must have shape (3, H, W), got {tuple(image_chw.shape)}")
    m = torch.tensor(mean, dtype=image_chw.dtype, device=image_chw.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image_chw.dtype, device=image_chw.device).view(3, 1, 1)
    rgb = ((image_chw * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return rgb.permute(1, 2, 0).contiguous().cpu().numpy()
