"""``freeseg bench``: the cost of FreeSeg's stage-1 mask next to the bare encoder forward.

The paper's speed claim is that the mask is almost free: one frozen-encoder pass gives the
class token (scores s), the patch tokens (ITSM) and the attention A, and the Partial Label
Strategy only thresholds maps. This measures, in one run on one device, with random weights
(speed does not depend on them):

- ``encoder``: the bare frozen-encoder forward;
- ``stage-1 mask``: encoder + scores + ITSM + PLS/Eq. 9 at the original size (what the
  pseudo-mask writer does per image), with P the ``labels`` top-scoring classes;
- ``encoder + K-means``: the Table-6 baseline on the same dense tokens;
- ``stage-0 step``: forward, InfoNCE, backward and AdamW step on the same images with
  captions;
- ``freeseg predict``: images/s end to end (data loader, writer, PNGs) on generated JPEGs.

Each time is the median of ``repeats`` runs after ``warmup``; "extra" is the part after the
encoder, timed on its own on the encoder's output. Peak memory is the peak above the memory in
use before the measurement: CUDA's allocator statistics, or on the CPU the process's resident
set sampled every millisecond (freed heap returned to the system first).
"""

from __future__ import annotations

import ctypes
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from PIL import Image

from freeseg.data.classes import ClassList, load_classes
from freeseg.data.pseudomasks import pseudo_label_map
from freeseg.models.iclip import ICLIP
from freeseg.models.image_encoder import FrozenViT
from freeseg.models.text_encoder import TextEncoder
from freeseg.ops.clustering import cluster_segmentation
from freeseg.ops.first_stage import first_stage
from freeseg.stages.iclip_module import ICLIPModule

VOC_CLASSES = 20  # + background: the paper's 21 classes


def _release_free_heap() -> None:
    """Return freed heap pages to the system (glibc), so a new peak shows in the RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak bytes in use above the level at entry (CUDA allocator, or CPU resident set)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.001)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            _release_free_heap()
            self.base = self._rss()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() - self.base)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` in seconds (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak(fn: Callable[[], Any], device: torch.device) -> int:
    with PeakMemory(device) as mem:
        fn()
    return mem.peak


def _module(model_name: str, image_size: int, classes: int, device: torch.device) -> ICLIPModule:
    torch.manual_seed(0)
    encoder = FrozenViT(model_name, img_size=image_size)
    text = TextEncoder(width=256, layers=12, heads=4, context_length=77)
    model = ICLIP(encoder, text, embed_dim=256, pooling="smoothed_min", kernel_size=19)
    module = ICLIPModule(model, classes="voc", templates="single")
    if classes != VOC_CLASSES:
        module.set_vocabulary(ClassList([[f"class {i}"] for i in range(classes)]))
    return module.to(device).eval()


def _bounds_selecting(scores: torch.Tensor, labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds that calibrate the ``labels`` top classes of ``scores`` (C,) to 1, others to 0."""
    top = torch.zeros_like(scores, dtype=torch.bool)
    top[scores.topk(min(labels, scores.numel())).indices] = True
    lo = torch.where(top, scores - 1, scores)
    return lo, lo + 1


def _write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:04d}.jpg", quality=90)


def _predict_rate(
    module: ICLIPModule,
    device: torch.device,
    images: int,
    batch: int,
    image_size: int,
    size: tuple[int, int],
    workers: int,
) -> float:
    """Images/s of ``trainer.predict`` with the pseudo-mask writer, data loading included."""
    import lightning.pytorch as pl

    from freeseg.data.pseudomasks import PseudoMaskDataModule
    from freeseg.stages.pseudo_writer import PseudoMaskWriter

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        _write_images(root, images, size)
        classes = Path(tmp) / "classes.txt"  # the module's own list, as a config would name it
        classes.write_text("".join(f"{n[0]}\n" for n in module.classes.names))
        data = PseudoMaskDataModule(
            str(root),
            str(Path(tmp) / "masks"),
            dataset="folder",
            classes="voc" if module.classes.names == load_classes("voc").names else str(classes),
            image_size=image_size,
            batch_size=batch,
            num_workers=workers,
        )
        trainer = pl.Trainer(
            accelerator=device.type,
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[PseudoMaskWriter()],
            default_root_dir=tmp,
        )
        start = time.perf_counter()
        trainer.predict(module, datamodule=data, return_predictions=False)
        return images / (time.perf_counter() - start)


def bench(
    model_name: str = "vit_base_patch8_224.dino",
    image_size: int = 448,
    original_size: tuple[int, int] | None = None,
    batch_size: int = 1,
    classes: int = VOC_CLASSES,
    labels: int = 2,
    cluster_k: int = 4,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    warmup: int = 1,
    repeats: int = 3,
    predict_images: int = 8,
    num_workers: int = 1,
) -> str:
    """Print (and return) the table of times, ratios to the bare forward and peak memory.

    Args:
        model_name: timm ViT of the frozen encoder (default: the paper's DINO ViT-B/8,
            random weights).
        image_size: square network input side (paper test size 448).
        original_size: ``(H, W)`` the masks are produced at (default: the input size).
        batch_size: images per forward.
        classes: foreground classes C (VOC: 20, so 21 maps with background).
        labels: |P|, classes the Partial Label Strategy keeps per image.
        cluster_k: clusters of the K-means baseline.
        device: ``auto`` takes CUDA when present.
        warmup, repeats: untimed and timed runs of each measurement (median reported).
        predict_images: generated images ``freeseg predict`` runs on (0: skip).
        num_workers: data-loader workers of the predict measurement.
    """
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    size = original_size or (image_size, image_size)
    module = _module(model_name, image_size, classes, dev)
    model = module.model
    config = module.partial_label_config
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(dev)
    captions = torch.randint(1, 49000, (batch_size, 77), generator=gen).to(dev)

    with torch.no_grad():
        text_cls, text_dense = module.class_text()  # prompts encoded once, as in predict
        enc = model.encode_image(images)
        scores0, _ = module.predictor.maps(enc)
    bounds = [_bounds_selecting(s.cpu(), labels) for s in scores0]
    owner = module.bank.owner.cpu().numpy()
    text_np = text_dense.float().cpu().numpy()

    def mask_after(enc: Any) -> None:
        scores, raw = module.predictor.maps(enc)
        for i in range(raw.shape[0]):
            out = first_stage(raw[i], scores[i].cpu(), *bounds[i], size, config)
            pseudo_label_map(out.seg, out.credible)

    def kmeans_after(enc: Any) -> None:
        tokens = model.dense_tokens(enc, model.mask_at_inference).float().cpu().numpy()
        h = w = image_size // int(cast(Any, model.image_encoder).patch_size)
        for t in tokens:
            seg = cluster_segmentation(
                t, (h, w), text_np, cluster_k, "kmeans", config.background, 0, owner
            )
            up = torch.nn.functional.interpolate(
                torch.from_numpy(seg)[None, None].float(), size=size, mode="nearest"
            )
            up[0, 0].long()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = module.contrastive_loss({"image": images, "input_ids": captions})[0]
        loss.backward()
        optimizer.step()

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()

        return run

    def train_then_eval() -> None:
        model.train()
        train_step()
        model.eval()

    rows: dict[str, Callable[[], Any]] = {
        "encoder": no_grad(lambda: model.encode_image(images)),
        "stage-1 mask": no_grad(lambda: mask_after(model.encode_image(images))),
        "encoder + K-means": no_grad(lambda: kmeans_after(model.encode_image(images))),
        "stage-0 step": train_then_eval,
    }
    extras = {
        "stage-1 mask": no_grad(lambda: mask_after(enc)),
        "encoder + K-means": no_grad(lambda: kmeans_after(enc)),
    }
    times = {name: _timed(fn, dev, warmup, repeats) for name, fn in rows.items()}
    extra = {name: _timed(fn, dev, warmup, repeats) for name, fn in extras.items()}
    peaks = {name: _peak(fn, dev) for name, fn in rows.items()}
    bare, bare_mem = times["encoder"], max(peaks["encoder"], 1)
    lines = [
        f"device {dev.type}, {torch.get_num_threads()} threads; {model_name} (random weights), "
        f"{image_size}², batch {batch_size}, {classes + 1} classes, |P| = {labels}, "
        f"masks at {size[0]}×{size[1]}; median of {repeats}",
        "",
        "| measurement | time (s) | × encoder | extra after the encoder (s) | peak memory (MB) "
        "| × encoder |",
        "|---|---|---|---|---|---|",
    ]
    for name in rows:
        ex = f"{extra[name]:.4g}" if name in extra else "—"
        lines.append(
            f"| {name} | {times[name]:.4g} | {times[name] / bare:.3f} | {ex} | "
            f"{peaks[name] / 2**20:.0f} | {peaks[name] / bare_mem:.2f} |"
        )
    lines.append("")
    ratio = extra["encoder + K-means"] / max(extra["stage-1 mask"], 1e-9)
    lines.append(
        f"mask extra time {ratio:.1f}× smaller than K-means' extra time; "
        f"mask with its extra timed alone: {(bare + extra['stage-1 mask']) / bare:.3f}× "
        "the encoder"
    )
    if predict_images:
        rate = _predict_rate(module, dev, predict_images, batch_size, image_size, size, num_workers)
        lines.append(
            f"freeseg predict: {rate:.4g} images/s end to end, "
            f"{rate * bare / batch_size:.1%} of the bare forward's "
            f"{batch_size / bare:.4g} images/s"
        )
    text = "\n".join(lines)
    print(text)
    return text
