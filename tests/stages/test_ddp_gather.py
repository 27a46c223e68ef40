"""Stage-0 InfoNCE under 2 gloo processes with B each equals 1 process with 2B (gathering)."""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
import torch.distributed as dist
from tests.stages.ddp_helpers import run_gloo
from tests.stages.tiny import tiny_iclip_module

from freeseg.stages.distributed import gather_rows


def _batch(sizes: list[int]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    n = sum(sizes)
    return {
        "image": torch.randn(n, 3, 64, 64, generator=gen),
        "input_ids": torch.randint(1, 400, (n, 16), generator=gen),
    }


@contextlib.contextmanager
def _alone():
    """Compute as one process would, while the process group stays up."""
    with mock.patch.object(dist, "is_initialized", return_value=False):
        yield


def _loss_and_grads(module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    module.zero_grad()
    loss = module.contrastive_loss(batch)[0]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _gathered_equals_full_batch(rank, world, classes, sizes) -> None:
    module = tiny_iclip_module(classes).double()  # seed 0: the same weights on both ranks
    full = _batch(sizes)
    full["image"] = full["image"].double()
    with _alone():  # one process, the whole batch
        ref_loss, ref_grads = _loss_and_grads(module, full)
    start = sum(sizes[:rank])
    local = {k: v[start : start + sizes[rank]] for k, v in full.items()}
    loss, grads = _loss_and_grads(module, local)
    # what DDP does: the loss logged as the mean over ranks, gradients averaged
    dist.all_reduce(loss)
    assert torch.allclose(loss / world, ref_loss, rtol=1e-10, atol=0), (loss / world, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 4
    for name, grad in grads.items():
        dist.all_reduce(grad)
        assert torch.allclose(grad / world, ref_grads[name], rtol=1e-8, atol=1e-12), name
    if rank == 0:  # without gathering each rank sees only its own negatives: not the same loss
        module.hparams["gather_features"] = False
        alone = module.contrastive_loss(local)[0].detach()
        assert not torch.allclose(alone, ref_loss, rtol=1e-3)
        module.hparams["gather_features"] = True


def _gather_rows_in_rank_order(rank) -> None:
    x = torch.full((rank + 1, 2), float(rank), requires_grad=True)
    (out,), offset, weight = gather_rows(x)
    assert weight == [2 / 3, 4 / 3][rank]
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    assert offset == [0, 1][rank]
    (out * torch.arange(1.0, 4.0)[:, None]).sum().backward()  # rows weighted 1, 2, 3
    # each rank's rows get the sum over both ranks' losses: 2 × their weight
    expected = [[[2.0, 2.0]], [[4.0, 4.0], [6.0, 6.0]]][rank]
    assert x.grad.tolist() == expected


def _all_checks(rank, world, init, classes) -> None:
    init()
    _gather_rows_in_rank_order(rank)
    _gathered_equals_full_batch(rank, world, classes, [3, 3])
    # a last, partial batch: 3 rows on rank 0 and 2 on rank 1
    _gathered_equals_full_batch(rank, world, classes, [3, 2])
    dist.destroy_process_group()


def test_two_ranks_of_b_equal_one_process_of_2b_and_gather_rows(tiny_world, tmp_path):
    """One spawn (process start-up dominates): gather_rows, then equal and unequal shards."""
    run_gloo(_all_checks, tmp_path, str(tiny_world / "classes.txt"))


def test_gather_rows_is_the_identity_in_one_process():
    x = torch.randn(3, 4)
    (out,), offset, weight = gather_rows(x)
    assert out is x and offset == 0 and weight == 1.0
