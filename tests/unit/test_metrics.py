"""Metrics (mIoU, matched IoU of Eq. 6, mAP) against hand-worked numbers and numpy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freeseg.metrics import MatchedIoU, MeanIoU, MultiLabelAP

# ----------------------------------------------------------------------------- MeanIoU


def test_mean_iou_hand_worked() -> None:
    pred = torch.tensor([[[0, 1], [1, 2]]])
    target = torch.tensor([[[0, 1], [2, 255]]])
    # class 0: 1/1; class 1: pred {(0,1),(1,0)}, gt {(0,1)} -> 1/2; class 2: the predicted 2
    # is on an ignored pixel, gt {(1,0)} -> 0/1; class 3 never appears -> left out.
    metric = MeanIoU(num_classes=4)
    metric.update(pred, target)
    per_class = metric.per_class()
    torch.testing.assert_close(per_class[:3], torch.tensor([1.0, 0.5, 0.0]))
    assert math.isnan(per_class[3].item())
    assert metric.compute().item() == pytest.approx(0.5)


def _numpy_miou(preds: list[np.ndarray], targets: list[np.ndarray], k: int) -> float:
    conf = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(preds, targets, strict=True):
        keep = t != 255
        np.add.at(conf, (t[keep], p[keep]), 1)
    ious = []
    for c in range(k):
        union = conf[c, :].sum() + conf[:, c].sum() - conf[c, c]
        if union > 0:
            ious.append(conf[c, c] / union)
    return float(np.mean(ious))


def test_mean_iou_vs_numpy_and_batching() -> None:
    rng = np.random.default_rng(0)
    k = 5
    preds = [rng.integers(0, k - 1, size=(2, 6, 7)) for _ in range(3)]  # class 4 never predicted
    targets = [rng.integers(0, k - 1, size=(2, 6, 7)) for _ in range(3)]
    for t in targets:
        t[rng.random(t.shape) < 0.2] = 255
    ref = _numpy_miou(preds, targets, k)
    batched = MeanIoU(num_classes=k)
    for p, t in zip(preds, targets, strict=True):
        batched.update(torch.from_numpy(p), torch.from_numpy(t))
    single = MeanIoU(num_classes=k)
    single.update(
        torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(targets))
    )
    assert batched.compute().item() == pytest.approx(ref, rel=1e-6)
    assert single.compute().item() == pytest.approx(ref, rel=1e-6)
    # Two "ranks" merged through the registered reductions give the same answer.
    rank0, rank1 = MeanIoU(num_classes=k), MeanIoU(num_classes=k)
    rank0.update(torch.from_numpy(preds[0]), torch.from_numpy(targets[0]))
    rank1.update(
        torch.from_numpy(np.concatenate(preds[1:])), torch.from_numpy(np.concatenate(targets[1:]))
    )
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(ref, rel=1e-6)


def test_mean_iou_state_is_the_confusion_matrix_of_numpy() -> None:
    """Random labels with ignored pixels and two classes absent from both sides: the state is
    numpy's confusion matrix (target rows, prediction columns), per_class its IoU with NaN for
    the absent classes, compute() their nanmean; one class (K = 1) counts too."""
    rng = np.random.default_rng(7)
    k = 7
    pred = rng.choice([0, 1, 2, 4, 6], size=(3, 9, 11))  # 3 and 5 never predicted
    target = rng.choice([0, 1, 2, 4, 6], size=(3, 9, 11))  # nor in the ground truth
    target[rng.random(target.shape) < 0.25] = 255
    pred[target == 255] = rng.integers(0, k, size=int((target == 255).sum()))  # ignored anyway
    keep = target != 255
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (target[keep], pred[keep]), 1)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    metric = MeanIoU(num_classes=k)
    for b in range(3):
        metric.update(torch.from_numpy(pred[b : b + 1]), torch.from_numpy(target[b : b + 1]))
    assert metric.confmat.dtype == torch.int64
    np.testing.assert_array_equal(metric.confmat.numpy(), conf)
    per_class = metric.per_class()
    assert per_class.dtype == torch.float32 and per_class.shape == (k,)
    np.testing.assert_allclose(per_class.numpy(), iou, rtol=1e-6, equal_nan=True)
    assert np.isnan(iou[[3, 5]]).all() and not np.isnan(iou[[0, 1, 2, 4, 6]]).any()
    assert metric.compute().item() == pytest.approx(float(np.nanmean(iou)), rel=1e-6)
    metric.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert metric.confmat.sum() == 0 and math.isnan(metric.compute().item())
    one = MeanIoU(num_classes=1)
    one.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 255], [0, 0]]]))
    assert one.confmat.tolist() == [[3]] and one.compute().item() == 1.0


def test_mean_iou_bad_values() -> None:
    metric = MeanIoU(num_classes=3)
    with pytest.raises(ValueError, match="pred values"):
        metric.update(torch.tensor([[[0, 3]]]), torch.tensor([[[0, 1]]]))
    with pytest.raises(ValueError, match="target values"):
        metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 7]]]))
    with pytest.raises(ValueError, match="same shape"):
        metric.update(
            torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long)
        )


# ----------------------------------------------------------------------------- MatchedIoU


def test_matched_iou_hand_worked() -> None:
    itsm = torch.tensor([[[[0.9, 0.4], [0.6, 0.95]], [[1.0, 1.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    target = torch.tensor([[[1, 1], [0, 255]]])  # class 0 present, class 1 absent
    metric = MatchedIoU(num_classes=2, thresholds=torch.tensor([0.7, 0.3, 0.5]))
    metric.update(itsm, target)
    # t=0.3: pred {(0,0),(0,1),(1,0)} (the 0.95 is ignored), gt {(0,0),(0,1)} -> 2/3
    # t=0.5: pred {(0,0),(1,0)} -> 1/3;  t=0.7: pred {(0,0)} -> 1/2
    torch.testing.assert_close(metric.curve(), torch.tensor([2 / 3, 1 / 3, 1 / 2]))
    best, thr = metric.compute()
    assert best.item() == pytest.approx(2 / 3)
    assert thr.item() == pytest.approx(0.3)


def _loop_mmiou(itsms: list[torch.Tensor], targets: list[torch.Tensor], thresholds: list[float]):  # type: ignore[no-untyped-def]
    sums = [0.0] * len(thresholds)
    pairs = 0
    for itsm, target in zip(itsms, targets, strict=True):
        for j in range(itsm.shape[0]):
            valid = (target[j] != 255).numpy()
            for c in range(itsm.shape[1]):
                gt = (target[j] == c + 1).numpy()
                if not gt.any():
                    continue
                pairs += 1
                for ti, t in enumerate(thresholds):
                    pred = (itsm[j, c] > torch.tensor(t, dtype=torch.float32)).numpy() & valid
                    sums[ti] += (pred & gt).sum() / (pred | gt).sum()
    means = [s / pairs for s in sums]
    best = int(np.argmax(means))
    return means, means[best], thresholds[best]


def test_matched_iou_vs_loop_and_batching() -> None:
    torch.manual_seed(0)
    c = 3
    itsms = [torch.rand(2, c, 5, 6) for _ in range(3)]
    targets = [torch.randint(0, c + 1, (2, 5, 6)) for _ in range(3)]
    targets[0][0] = torch.where(targets[0][0] == 2, 0, targets[0][0])  # class 1 absent there
    for t in targets:
        t[torch.rand(t.shape) < 0.15] = 255
    thresholds = torch.linspace(0.05, 0.95, 19)
    means, best_ref, thr_ref = _loop_mmiou(itsms, targets, thresholds.tolist())
    batched = MatchedIoU(num_classes=c)
    for itsm, target in zip(itsms, targets, strict=True):
        batched.update(itsm, target)
    single = MatchedIoU(num_classes=c)
    single.update(torch.cat(itsms), torch.cat(targets))
    for metric in (batched, single):
        np.testing.assert_allclose(metric.curve().numpy(), np.array(means), rtol=1e-6)
        best, thr = metric.compute()
        assert best.item() == pytest.approx(best_ref, rel=1e-6)
        assert thr.item() == pytest.approx(thr_ref)


def test_matched_iou_empty_and_bad_inputs() -> None:
    metric = MatchedIoU(num_classes=2)
    metric.update(torch.rand(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))  # no class
    best, thr = metric.compute()
    assert math.isnan(best.item()) and math.isnan(thr.item())
    with pytest.raises(ValueError, match="itsm must have shape"):
        metric.update(torch.rand(1, 3, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target values"):
        metric.update(torch.rand(1, 2, 3, 3), torch.full((1, 3, 3), 3))
    with pytest.raises(ValueError, match="thresholds"):
        MatchedIoU(num_classes=2, thresholds=torch.tensor([]))


# ----------------------------------------------------------------------------- MultiLabelAP


def _numpy_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits, precisions = 0, []
    for rank, idx in enumerate(order, start=1):
        if labels[idx]:
            hits += 1
            precisions.append(hits / rank)
    return float(np.mean(precisions))


def test_multilabel_ap_hand_worked() -> None:
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.6]])
    labels = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2 = 5/6; class 1 has no positive.
    metric = MultiLabelAP(num_classes=2)
    metric.update(scores, labels)
    per_class = metric.per_class()
    assert per_class[0].item() == pytest.approx(5 / 6)
    assert math.isnan(per_class[1].item())
    assert metric.compute().item() == pytest.approx(5 / 6)


def test_multilabel_ap_vs_numpy_and_batching() -> None:
    rng = np.random.default_rng(1)
    n, c = 24, 4
    scores = rng.normal(scale=30.0, size=(n, c))  # large logits: sigmoid would saturate
    labels = rng.random((n, c)) < 0.4
    labels[:, 2] = False  # no positives: left out of the mean
    labels[0, 0] = labels[1, 1] = labels[2, 3] = True
    ref = np.mean([_numpy_ap(scores[:, k], labels[:, k]) for k in (0, 1, 3)])
    batched = MultiLabelAP(num_classes=c)
    for lo in range(0, n, 10):
        batched.update(
            torch.from_numpy(scores[lo : lo + 10]).float(), torch.from_numpy(labels[lo : lo + 10])
        )
    single = MultiLabelAP(num_classes=c)
    single.update(torch.from_numpy(scores).float(), torch.from_numpy(labels).long())
    assert batched.compute().item() == pytest.approx(ref, rel=1e-6)
    assert single.compute().item() == pytest.approx(ref, rel=1e-6)


def test_multilabel_ap_bad_inputs() -> None:
    metric = MultiLabelAP(num_classes=2)
    with pytest.raises(ValueError, match="scores"):
        metric.update(torch.rand(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="labels must be"):
        metric.update(torch.rand(3, 2), torch.full((3, 2), 2))


def test_validate_args_false_skips_the_value_checks_but_not_the_counting():
    """As torchmetrics' ``validate_args``: the value checks (host syncs) can be turned off."""
    from freeseg.metrics import MeanIoU, MultiLabelAP
    from freeseg.ops.losses import partial_pixel_loss

    bad = torch.tensor([[[0, 1], [5, 255]]])  # 5 is out of range for 3 classes
    pred = torch.tensor([[[0, 1], [2, 2]]])
    with pytest.raises(ValueError):
        MeanIoU(3).update(pred, bad)
    fast = MeanIoU(3, validate_args=False)
    fast.update(pred, torch.tensor([[[0, 1], [2, 255]]]))
    assert fast.confmat.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # counted by hand
    with pytest.raises(ValueError):
        MultiLabelAP(2).update(torch.zeros(1, 2), torch.tensor([[2, 0]]))
    MultiLabelAP(2, validate_args=False).update(torch.zeros(1, 2), torch.tensor([[2, 0]]))
    logits = torch.zeros(1, 3, 2, 2)
    weight = torch.ones(1, 2, 2)
    with pytest.raises(ValueError):
        partial_pixel_loss(logits, bad, weight)
    good = torch.tensor([[[0, 1], [2, 255]]])
    expected = 3 * math.log(3) / 4  # three credible pixels of uniform logits, over all four
    loss = partial_pixel_loss(logits, good, weight, validate_args=False)
    assert float(loss) == pytest.approx(expected)
