"""Skipped-sample accounting of the image-caption pipeline: what was skipped, and how many.

Broken samples become :class:`Skip` markers where they are decoded; :func:`attach_skips` hangs
them on the next usable sample so they travel with the batches out of the DataLoader workers;
:class:`ShardLosses` turns a shard that could not be read to its end into one marker counting
the samples lost; :class:`SkipTally` adds them up in the main process for the end-of-epoch line.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import webdataset as wds

from freeseg.data.shards import count_samples, stats_successes

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Skip:
    """A sample that could not be used: its key and why (``count`` > 1: samples of a shard
    lost past the point where it could not be read)."""

    key: str
    reason: str
    count: int = 1

    def __str__(self) -> str:
        return f"{self.key} ({self.reason})"


def attach_skips(samples: Iterator[dict[str, Any] | Skip]) -> Iterator[dict[str, Any]]:
    """Hang the Skip markers on the next decoded sample (``"skips"``), so that ``wds.batched``
    counts usable samples only; markers ending the stream form one item, ``{"skips": [...]}``."""
    skips: list[Skip] = []
    for sample in samples:
        if isinstance(sample, Skip):
            skips.append(sample)
            continue
        yield {**sample, "skips": skips}
        skips = []
    if skips:
        yield {"skips": skips}


class ShardLosses:
    """Counts the samples lost when a shard cannot be read to its end (truncated, unreadable).

    :meth:`handler` is webdataset's exception handler: it warns, naming the shard, notes the
    shard, and goes on. :meth:`markers`, right after the tar reader, accounts for each shard when
    the stream moves past it: one :class:`Skip` whose ``count`` is the shard's samples
    (``_stats.json``, else a scan) not read, at least 1, for a shard that raised; and for one
    that ended silently (a cut at a member boundary) short of its ``_stats.json`` count, the
    difference. A shard cycled alone (one shard per worker) is accounted for only when its
    worker's stream ends.
    """

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.url, self.read = "", 0

    def handler(self, exn: Exception) -> bool:
        if len(exn.args) >= 2 and isinstance(exn.args[-1], str):  # a shard-level error
            self.errors[exn.args[-1]] = str(exn.args[0])
        return wds.warn_and_continue(exn)

    def _finish(self, keep: str) -> Iterator[Skip]:
        """Skips for the shard read so far and for every shard that raised, but ``keep``."""
        done = {url: message for url, message in self.errors.items() if url != keep}
        self.errors = {url: message for url, message in self.errors.items() if url == keep}
        expected = stats_successes(self.url) if self.url and self.url not in done else None
        if expected is not None and self.read < expected:
            reason = f"ends after {self.read} of the {expected} samples of its _stats.json"
            yield Skip(self.url, reason, count=expected - self.read)
        for url, message in done.items():
            read = self.read if url == self.url else 0
            try:
                expected = count_samples([url])
            except (OSError, tarfile.TarError, ValueError):
                expected = 0
            reason = f"unreadable after {read} samples: {message}"
            yield Skip(url, reason, count=max(expected - read, 1))

    def markers(self, samples: Iterator[Any]) -> Iterator[Any]:
        # a new pass: a shard the last one left unfinished (its epoch was cut there, as a
        # cycled loader does in this process when it has no workers) lost nothing
        self.errors, self.url, self.read = {}, "", 0
        for sample in samples:
            url = str(sample.get("__url__", ""))
            if url != self.url:
                yield from self._finish(keep=url)
                self.url, self.read = url, 0
            self.read += 1
            yield sample
        yield from self._finish(keep="")


@dataclass
class SkipTally:
    """Skipped-sample counts gathered in the main process.

    Attributes:
        name: what is being read (for the log line), e.g. "train".
        epoch_skipped: skips seen in the current (or last finished) pass.
        total_skipped: skips since creation.
        examples: up to MAX_EXAMPLES "key (reason)" strings from the current pass.
    """

    name: str = "image-text"
    epoch_skipped: int = 0
    total_skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def start_epoch(self) -> None:
        self.epoch_skipped = 0
        self.examples = []

    def add(self, batch: dict[str, Any]) -> None:
        skipped = int(batch.get("skipped", 0))
        self.epoch_skipped += skipped
        self.total_skipped += skipped
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(batch.get("skipped_examples", [])[: max(room, 0)])

    def message(self) -> str | None:
        """The end-of-epoch warning line, or None if nothing was skipped."""
        if not self.epoch_skipped:
            return None
        more = ", ..." if self.epoch_skipped > len(self.examples) else ""
        return (
            f"{self.name}: skipped {self.epoch_skipped} corrupt samples this epoch: "
            f"{', '.join(self.examples)}{more}"
        )
