"""Image-caption pairs from webdataset tar shards in the img2dataset layout.

A shard holds samples ``KEY.jpg`` (or ``.jpeg``/``.png``/``.webp``), ``KEY.txt`` (the caption,
UTF-8) and optionally ``KEY.json``. img2dataset also writes ``{shard}_stats.json`` beside each
shard, whose ``"successes"`` is the number of samples in it.

Broken samples (undecodable image, missing/empty/non-UTF-8 caption) are skipped and counted,
never fatal. Workers cannot share Python counters, so the skip record travels with the data:
decoding turns a broken sample into a :class:`Skip` marker, :func:`attach_skips` hangs the
markers on the next usable sample so that ``wds.batched`` (inside the worker pipeline) puts them
in that sample's batch, :class:`ImageTextCollate` folds them into the batch's ``skipped`` /
``skipped_examples`` fields, and :class:`ImageTextLoader`, in the main process, adds them to a
:class:`SkipTally` and logs a line when the epoch ends. A worker whose stream ends with markers
only emits a marker-only batch (no ``"image"`` key) that the loader counts and drops. Shards
(:class:`WorkerShards`) and samples (``wds.detshuffle``) are shuffled from the seed and the epoch.
"""

from __future__ import annotations

import io
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import torch
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from freeseg.data.shards import IMAGE_EXTENSIONS
from freeseg.data.skips import MAX_EXAMPLES, ShardLosses, Skip, SkipTally, attach_skips

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], torch.Tensor]


def decode_sample(
    sample: dict[str, Any],
    transform: Callable[[Image.Image], torch.Tensor],
    captions: bool = True,
) -> dict[str, Any] | Skip:
    """Raw webdataset sample → ``{"image": (3, S, S) float, "caption": str, "key": str}`` or Skip.

    With ``captions=False`` (images alone, for self-supervised pretraining) the caption is not
    read and may be missing: ``"caption"`` is then ``""``.
    """
    if isinstance(sample, Skip):  # a shard's lost samples (ShardLosses), passed on
        return sample
    key = str(sample.get("__key__", "?"))
    fields = {name.lower(): value for name, value in sample.items() if not name.startswith("__")}
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in fields), None)
    if image_ext is None:
        return Skip(key, "no image (.jpg/.jpeg/.png/.webp)")
    caption = ""
    if captions:
        if "txt" not in fields:
            return Skip(key, "missing .txt caption")
        try:
            caption = fields["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            return Skip(key, "caption is not UTF-8")
        if not caption:
            return Skip(key, "empty caption")
    try:
        with Image.open(io.BytesIO(fields[image_ext])) as img:
            image = img.convert("RGB")  # forces the full decode, so truncation surfaces here
    except UnidentifiedImageError:
        return Skip(key, "cannot identify image")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return Skip(key, f"cannot decode image: {exc}")
    return {"image": transform(image), "caption": caption, "key": key}


class ImageTextCollate:
    """Items of :func:`attach_skips` → one batch dict (``wds.batched``'s ``collation_fn``).

    Args:
        tokenizer: list of B captions → ``(B, L)`` int64 token ids; None: no ``input_ids``.
    """

    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Returns ``{"image": (B, 3, S, S), "input_ids": (B, L) int64, "caption": [B],
        "key": [B], "skipped": int, "skipped_examples": [str]}``; without samples only the last two.
        """
        skips = [skip for item in items for skip in item["skips"]]
        samples = [item for item in items if "image" in item]
        batch: dict[str, Any] = {
            "skipped": sum(skip.count for skip in skips),
            "skipped_examples": [str(skip) for skip in skips[:MAX_EXAMPLES]],
        }
        if samples:
            captions = [s["caption"] for s in samples]
            batch["image"] = torch.stack([s["image"] for s in samples])
            if self.tokenizer is not None:
                batch["input_ids"] = self.tokenizer(captions)
            batch["caption"] = captions
            batch["key"] = [s["key"] for s in samples]
        return batch


def set_shuffle_epoch(pipeline: wds.DataPipeline, epoch: int) -> None:
    """Shuffle the next pass of ``pipeline`` as epoch ``epoch`` (shards and samples).

    ``wds.detshuffle`` counts its own passes, but a DataLoader worker starts each epoch from a
    fresh copy of the main process's pipeline: without this, every epoch would replay epoch 0.
    """
    for stage in pipeline.pipeline:
        if isinstance(stage, wds.detshuffle):
            stage.epoch = epoch - 1  # run() increments it before seeding with seed + epoch
        elif isinstance(stage, WorkerShards):
            stage.epoch = epoch


# Ours, not DataPipeline.repeat (it restarts the whole pipeline each pass: a partial batch at each
# pass end, and broken samples repeat forever) nor ResampledShards (no per-rank/worker split).
class WorkerShards:
    """``wds.split_by_worker``, then this worker's shards once, or cycled forever (none: nothing).

    Each pass reads every shard once, in an order drawn from ``seed``, the epoch and the pass
    (list order without ``shuffle``); not by ``wds.detshuffle``, whose buffer reads into the next
    pass and so fired the read-nothing guard below on a worker with under min(100, all) shards.

    Cycling below the sample level lets batches run across passes, so none is left partial.
    Two guards end what would otherwise cycle forever, naming the shards: :meth:`count`, right
    after the tar reader, raises when a pass over this worker's shards read no sample (empty or
    unreadable shards); :meth:`count_decoded`, after decoding, raises when no sample decoded
    among the first ``ALL_BROKEN_PASSES`` passes' worth (plus the shuffle buffer).

    Args:
        cycle: cycle the shards forever (else one pass).
        shuffle: a new shard order every pass (else list order).
        seed: the shard shuffle seed.
        shuffle_buffer: the sample shuffle buffer between reading and decoding.
    """

    ALL_BROKEN_PASSES = 20  # a usable sample per pass is missed this long with p < e^-20

    def __init__(
        self, cycle: bool = False, shuffle: bool = False, seed: int = 0, shuffle_buffer: int = 0
    ) -> None:
        self.cycle, self.shuffle, self.seed = cycle, shuffle, seed
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.read = 0
        self.pass_size: int | None = None
        self.good = self.broken = 0
        self.names = ""

    def __call__(self, urls: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        mine = list(wds.split_by_worker(urls))
        self.names = ", ".join(str(url["url"]) for url in mine)
        for pass_index in itertools.count():
            order = [dict(url) for url in mine]  # copies: the opener stage mutates the dicts
            if self.shuffle:
                random.Random(f"{self.seed}-{self.epoch}-{pass_index}").shuffle(order)
            before = self.read
            yield from order
            if not (self.cycle and mine):
                return
            if self.read == before:  # pulled again only once the last shard was read through
                raise RuntimeError(f"a full pass over the shards {self.names} read no sample")
            self.pass_size = self.pass_size or self.read - before

    def count(self, samples: Iterator[Any]) -> Iterator[Any]:
        for sample in samples:
            self.read += 1
            yield sample

    def count_decoded(self, samples: Iterator[Any]) -> Iterator[Any]:
        for sample in samples:
            if not isinstance(sample, Skip):
                self.good += 1
            else:
                self.broken += 1
                if not self.good and self.pass_size is not None:
                    bound = self.ALL_BROKEN_PASSES * self.pass_size + self.shuffle_buffer
                    if self.broken >= bound:
                        raise RuntimeError(
                            f"no usable sample among {self.broken} read from the shards "
                            f"{self.names}, e.g. {sample}"
                        )
            yield sample


def build_imagetext_pipeline(
    urls: list[str],
    transform: Callable[[Image.Image], torch.Tensor],
    collate: ImageTextCollate,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int = 0,
    batches_per_worker: int | None = None,
    captions: bool = True,
) -> wds.DataPipeline:
    """Shards → batches, split across nodes (``split_by_node``) and DataLoader workers.

    Args:
        urls: shard paths, in a fixed order (every rank must see the same list).
        shuffle_buffer: sample shuffle buffer; 0 = no shuffle (shard order shuffled neither).
        seed: shuffle seed, combined with the epoch (:func:`set_shuffle_epoch`).
        batches_per_worker: None = one pass over this worker's shards; else cycle the shards
            and stop after this many batches (use with :class:`ImageTextLoader`'s ``num_batches``).
        captions: False reads the images alone (see `decode_sample`).

    Returns:
        An IterableDataset of batch dicts (see :class:`ImageTextCollate`), to be loaded with
        ``DataLoader(batch_size=None)``.
    """
    cycle = batches_per_worker is not None
    shards, losses = WorkerShards(cycle, shuffle_buffer > 0, seed, shuffle_buffer), ShardLosses()
    dataset = wds.WebDataset(
        urls,
        shardshuffle=False,  # WorkerShards orders the shards
        nodesplitter=wds.split_by_node,
        workersplitter=shards,
        empty_check=False,
        handler=losses.handler,  # an unreadable shard or tar member: warn, count, go on
    ).compose(shards.count)
    dataset = dataset.compose(losses.markers)
    if shuffle_buffer > 0:
        dataset = dataset.compose(wds.detshuffle(shuffle_buffer, initial=shuffle_buffer, seed=seed))
    dataset = dataset.map(partial(decode_sample, transform=transform, captions=captions))
    if cycle:
        dataset = dataset.compose(shards.count_decoded)
    dataset = dataset.compose(attach_skips).batched(batch_size, collation_fn=collate)
    return dataset.with_epoch(batches_per_worker) if cycle else dataset


class ImageTextLoader:
    """Main-process iterable over a worker DataLoader: counts skips, drops marker-only batches.

    Args:
        loader: a ``DataLoader(pipeline, batch_size=None)`` over :func:`build_imagetext_pipeline`.
        tally: where skip counts go; reset when an epoch starts, logged when it ends.
        num_batches: stop after this many batches (every rank the same, so DDP stays in step);
            None = until the loader is exhausted, and ``len()`` is undefined.
        source: the shards read, for the error raised when a pass yields no batch at all.
        epoch: the number of the next pass, counted up by each: a loader over a webdataset
            pipeline shuffles it as this epoch (:func:`set_shuffle_epoch`).
    """

    def __init__(
        self,
        loader: Iterable[dict[str, Any]],
        tally: SkipTally,
        num_batches: int | None = None,
        source: str = "the shards",
        epoch: int = 0,
    ) -> None:
        self.loader = loader
        self.tally = tally
        self.num_batches = num_batches
        self.source = source
        self.epoch = epoch

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("ImageTextLoader has no length in single-pass mode (epoch_size unset)")
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pipeline = getattr(self.loader, "dataset", None)
        if isinstance(pipeline, wds.DataPipeline):  # before the workers copy it
            set_shuffle_epoch(pipeline, self.epoch)
        self.epoch += 1
        self.tally.start_epoch()
        produced = 0
        try:
            for batch in self.loader:
                self.tally.add(batch)
                if "image" not in batch:
                    continue
                yield batch
                produced += 1
                # cut here, not by wds.WebLoader.with_epoch: marker-only batches do not count
                if self.num_batches is not None and produced >= self.num_batches:
                    break
            if not produced:  # else an epoch of 0 steps "succeeds" and saves an untrained model
                examples = ", ".join(self.tally.examples)
                raise RuntimeError(
                    f"{self.tally.name}: no usable sample in {self.source} "
                    f"({self.tally.epoch_skipped} skipped: {examples or 'none'})"
                )
        finally:
            message = self.tally.message()
            if message:
                log.warning(message)
