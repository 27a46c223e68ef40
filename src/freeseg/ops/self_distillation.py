"""Self-distillation with no labels (DINO, Caron et al. 2021): the stand-in encoder's objective.

The paper freezes a DINO ViT; on worlds without DINO weights the stand-in is trained with
DINO's recipe on images alone. A teacher (EMA of the student) turns its view of an image
into a sharpened, centred distribution over K prototypes; the student learns to predict it
from the other views (global and local crops) of the same image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centered_teacher(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """DINO's teacher targets: P_t = softmax((g_t(x) − c) / τ_t) over K prototypes.

    Args:
        logits: (B, K) teacher head outputs g_t(x).
        center: (1, K) or (K,) running centre c.
        temp: teacher temperature τ_t (sharpening; DINO 0.04–0.07).

    Returns:
        (B, K) rows summing to 1.
    """
    return F.softmax((logits - center) / temp, dim=-1)


def update_center(center: torch.Tensor, logits: torch.Tensor, momentum: float) -> torch.Tensor:
    """c ← m·c + (1 − m)·mean_b g_t(x_b) (DINO Eq. 4), without gradient.

    Args:
        center: (1, K) running centre.
        logits: (B, K) teacher outputs of this step (all ranks' mean under DDP is the caller's).
        momentum: m in [0, 1).

    Returns:
        (1, K) new centre.
    """
    return momentum * center + (1.0 - momentum) * logits.detach().mean(dim=0, keepdim=True)


@torch.no_grad()
def sinkhorn_teacher(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets by Sinkhorn-Knopp centring (SwAV; DINOv2's teacher).

    Q = exp(g_t(x) / τ_t)ᵀ, then alternately normalised so every prototype gets an equal share
    of the batch (rows sum to 1/K) and every image a distribution (columns sum to 1/B); the
    targets are B·Qᵀ. Unlike the running centre of `centered_teacher`, the batch itself
    forbids the uniform and the one-prototype collapses, which matters at small scale.

    Args:
        logits: (B, K) teacher head outputs.
        temp: teacher temperature τ_t.
        iterations: Sinkhorn-Knopp iterations.

    Returns:
        (B, K) rows summing to 1.
    """
    q = (logits.float() - logits.float().amax()).div(temp).exp().t()  # (K, B)
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).t()


def self_distillation_loss(
    student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor], temp: float
) -> torch.Tensor:
    """DINO's loss: mean over view pairs (v ≠ u) of H(P_t(u), P_s(v)).

    H(a, b) = −Σ_k a_k log b_k averaged over the batch, P_s = softmax(g_s(x) / τ_s). The
    teacher sees the global views u = 0..G−1; the student's views list starts with the same
    G global views (skipped against themselves), then the local crops.

    Args:
        student_logits: V tensors (B, K), the first G in the teacher's view order.
        teacher_probs: G tensors (B, K), rows summing to 1.
        temp: student temperature τ_s (DINO 0.1).

    Returns:
        Scalar loss.
    """
    if len(student_logits) < len(teacher_probs):
        raise ValueError("the student must see at least the teacher's views")
    total = student_logits[0].new_zeros(())
    pairs = 0
    log_probs = [F.log_softmax(s.float() / temp, dim=-1) for s in student_logits]
    for u, target in enumerate(teacher_probs):
        for v, log_p in enumerate(log_probs):
            if u == v:
                continue
            total = total - (target * log_p).sum(dim=-1).mean()
            pairs += 1
    return total / max(pairs, 1)
