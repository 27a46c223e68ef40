"""How learnable are a generated world's classes? The stand-in's architecture, trained on labels.

A diagnostic for stage 0a, not part of the method: it trains the stand-in's ViT (the
architecture of an encoder config, from scratch, without patch dropout unless
``--patch_drop_rate`` asks for it) or a ResNet-18 on the *ground-truth* image labels of a
generated world's pairs (the ``objects`` field that ``freeseg synth`` and
``tools/altworld.py`` write into every sample's JSON; real img2dataset shards have no such
field) with one binary cross-entropy per class, and prints the val
set's macro mAP (labels read from the val masks) after every epoch. Its mAP is the ceiling a
weakly supervised stand-in (caption tags) can hope for with the same architecture, images and
schedule: when it stays near chance, the world's classes are beyond that budget, whatever
the objective.

Images are resized to ``--image_size`` (val images too), normalised by the pairs' own channel
means and deviations, and flipped at random; AdamW with the stage-0a learning rate, weight
decay and warm-up cosine schedule. Usage::

    python tools/label_ceiling.py data/world --epochs 2
    python tools/label_ceiling.py /tmp/altworld --arch resnet18 --image_size 64

Prints one line per epoch and, last, a JSON line with the per-epoch val mAP and the chance
level (the share of positive labels on val, a random scorer's expected mAP).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from torchmetrics.functional.classification import multilabel_average_precision

from freeseg.data.classes import load_classes
from freeseg.data.palette import load_label_png
from freeseg.data.segsets import image_labels
from freeseg.models.image_encoder import create_vit
from freeseg.stages.schedules import warmup_cosine

ROOT = Path(__file__).resolve().parents[1]


def _stacked(
    images: list[np.ndarray], labels: list[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor]:
    """HWC uint8 images and label rows → ``(N, 3, H, W)`` uint8 and ``(N, C)`` float."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.from_numpy(
        np.stack(labels)
    )


def read_pairs(world: Path, size: int, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All shard images ``(N, 3, size, size)`` uint8 and their labels ``(N, C)`` from ``objects``."""
    index = {name: c for c, name in enumerate(classes)}
    images, labels = [], []
    for shard in sorted((world / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            for name in sorted(n for n in members if n.endswith(".jpg")):
                meta_file = tar.extractfile(members[name[:-4] + ".json"])
                image_file = tar.extractfile(members[name])
                assert meta_file is not None and image_file is not None
                meta = json.loads(meta_file.read())
                if "objects" not in meta:
                    raise ValueError(
                        f"{shard}: sample {name[:-4]} has no 'objects' field; only generated "
                        "worlds record their image labels"
                    )
                image = Image.open(io.BytesIO(image_file.read())).convert("RGB")
                images.append(np.asarray(image.resize((size, size), Image.BICUBIC)))
                row = np.zeros(len(classes), np.float32)
                row[[index[o] for o in meta["objects"]]] = 1.0
                labels.append(row)
    if not images:
        raise FileNotFoundError(f"no samples in {world / 'shards'}/*.tar")
    return _stacked(images, labels)


def read_val(world: Path, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The VOC-layout val images ``(N, 3, size, size)`` uint8 and labels from their masks."""
    voc = world / "voc"
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    images, labels = [], []
    for key in ids:
        image = Image.open(voc / "JPEGImages" / f"{key}.jpg").convert("RGB")
        images.append(np.asarray(image.resize((size, size), Image.BICUBIC)))
        mask = torch.from_numpy(load_label_png(voc / "SegmentationClass" / f"{key}.png"))
        labels.append(image_labels([mask], num_classes)[0].float().numpy())
    return _stacked(images, labels)


def build(
    arch: str, config: Path, size: int, num_classes: int, patch_drop_rate: float = 0.0
) -> nn.Module:
    """The encoder config's ViT with a linear head, or a ResNet-18.

    The ViT drops ``patch_drop_rate`` of its patch tokens in training forwards (timm's
    ``PatchDropout``), whatever the config's own rate.
    """
    if arch == "resnet18":
        return timm.create_model("resnet18", num_classes=num_classes)
    args = yaml.safe_load(config.read_text())["model"]["init_args"]
    kwargs = dict(args.get("model_kwargs") or {})
    kwargs["patch_drop_rate"] = patch_drop_rate
    vit = create_vit(args["model_name"], size, args.get("stem", "patch"), kwargs)
    return nn.Sequential(vit, nn.Linear(vit.embed_dim, num_classes))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", type=Path, help="a generated world (shards/, voc/, classes.txt)")
    parser.add_argument("--arch", choices=("vit", "resnet18"), default="vit")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/synthetic/encoder.yaml")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch_drop_rate",
        type=float,
        default=0.0,
        help="share of the ViT's patch tokens dropped in training (the shipped recipe: 0.75)",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    classes = load_classes(str(args.world / "classes.txt")).display_names
    images, labels = read_pairs(args.world, args.image_size, classes)
    val_images, val_labels = read_val(args.world, args.image_size, len(classes))
    mean = images.float().mean((0, 2, 3), keepdim=True) / 255
    std = images.float().std((0, 2, 3), keepdim=True) / 255

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - mean) / std

    model = build(args.arch, args.config, args.image_size, len(classes), args.patch_drop_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = len(images) // args.batch_size
    total = args.epochs * steps_per_epoch
    schedule = warmup_cosine(optimizer, total, warmup_steps=total // 20)
    chance = float(val_labels.mean())
    print(
        f"{len(images)} pairs, {len(val_images)} val images, {len(classes)} classes, "
        f"{args.arch} at {args.image_size}², chance mAP {chance:.3f}",
        flush=True,
    )
    history, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(images))
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = normalise(images[idx])
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(3)
            loss = F.binary_cross_entropy_with_logits(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            scores = torch.cat(
                [model(normalise(val_images[i : i + 100])) for i in range(0, len(val_images), 100)]
            )
        ap = float(
            multilabel_average_precision(
                scores, val_labels.long(), num_labels=len(classes), average="macro"
            )
        )
        history.append(round(ap, 4))
        print(
            f"epoch {epoch}: train loss {loss.item():.3f}, val mAP {ap:.3f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    result = {
        "arch": args.arch,
        "image_size": args.image_size,
        "val_mAP": history,
        "chance": round(chance, 4),
        "pairs": len(images),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
