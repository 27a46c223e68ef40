"""Shard lists and sample counts of webdataset tar shards in the img2dataset layout.

``expand_shards`` turns a brace/glob pattern into shard paths; ``count_samples`` counts their
samples from img2dataset's ``{shard}_stats.json`` where it is current, else by reading the tar
(cached per file and modification time); ``check_shards`` refuses a missing or unreadable shard
with a message naming it.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Iterable
from functools import lru_cache

import braceexpand

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_shards(pattern: str) -> list[str]:
    """Shard paths matching a glob and/or brace pattern; several patterns joined by ``::``.

    Remote URLs (``pipe:...`` or containing ``://``) are passed through unchecked.

    Returns:
        The shard paths, sorted within each pattern (the order decides the worker split).

    Raises:
        FileNotFoundError: a pattern matches no file.
        IsADirectoryError: a pattern matches a directory.
    """
    urls: list[str] = []
    for part in pattern.split("::"):
        for expanded in braceexpand.braceexpand(part):
            if expanded.startswith("pipe:") or "://" in expanded:
                urls.append(expanded)
                continue
            matches = sorted(glob.glob(os.path.expanduser(expanded)))
            folders = [m for m in matches if os.path.isdir(m)]
            if folders:
                raise IsADirectoryError(
                    f"{folders[0]} is a directory, not a shard: the pattern {pattern!r} must match "
                    "webdataset .tar files only (e.g. 'DIR/*.tar')"
                )
            if not matches:
                raise FileNotFoundError(
                    f"no image-text shards match {expanded!r} (from pattern {pattern!r}); expected "
                    "webdataset .tar shards in img2dataset layout (KEY.jpg, KEY.txt, KEY.json). "
                    "Generate some with `freeseg synth`, or download GCC3M with img2dataset "
                    "(--output_format webdataset)."
                )
            urls.extend(matches)
    return urls


def sample_key(member_name: str) -> tuple[str, str]:
    """``dir/abc.x.jpg`` → (``dir/abc``, ``x.jpg``), webdataset's key rule (first dot of basename)."""
    head, _, base = member_name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def _stats_path(path: str) -> str:
    """img2dataset's ``00000.tar`` → ``00000_stats.json``."""
    return (path[: -len(".tar")] if path.endswith(".tar") else path) + "_stats.json"


@lru_cache(maxsize=4096)
def _count_shard(
    path: str, shard_stamp: tuple[int, int], stats_stamp: tuple[int, int] | None
) -> int:
    """Samples in one shard; the stamps ((mtime_ns, size) of shard and stats file) key the cache."""
    if stats_stamp is not None:
        with open(_stats_path(path), encoding="utf-8") as fh:
            successes = json.load(fh).get("successes")
        if isinstance(successes, int):
            return successes
    keys = set()
    with tarfile.open(path) as tar:
        for member in tar:
            key, ext = sample_key(member.name)
            if member.isfile() and ext.lower() in IMAGE_EXTENSIONS:
                keys.add(key)
    return len(keys)


def stats_successes(path: str) -> int | None:
    """``"successes"`` of a local shard's ``_stats.json``, or None without a readable one."""
    try:
        with open(_stats_path(path), encoding="utf-8") as fh:
            successes = json.load(fh).get("successes")
    except (OSError, ValueError, AttributeError):
        return None
    return successes if isinstance(successes, int) else None


def _stamp(path: str) -> tuple[int, int] | None:
    if not os.path.isfile(path):
        return None
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def count_samples(urls: Iterable[str]) -> int:
    """Number of samples in local shards: ``_stats.json`` "successes" if present, else a tar scan.

    Counts include samples that will later be skipped as broken. Results are cached per
    (path, mtime, size) of the shard and its stats file.
    """
    total = 0
    for url in urls:
        shard_stamp = _stamp(url)
        if shard_stamp is None:
            raise FileNotFoundError(f"cannot count samples of {url!r}: not a local file")
        total += _count_shard(url, shard_stamp, _stamp(_stats_path(url)))
    return total


def check_shards(urls: Iterable[str]) -> None:
    """Refuse local shards that cannot yield a sample, naming them (remote URLs pass unchecked).

    Raises:
        ValueError: a shard is not a readable tar (a zero-byte file, say), or holds no sample
            with an image, by its ``_stats.json`` or by a scan of its members.
    """
    empty = []
    for url in urls:
        if url.startswith("pipe:") or "://" in url:
            continue
        try:
            if count_samples([url]) == 0:
                empty.append(url)
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise ValueError(f"{url}: not a readable tar shard ({exc})") from exc
    if empty:
        raise ValueError(
            f"{len(empty)} shard(s) hold no sample (KEY.jpg + KEY.txt): {', '.join(empty)}"
        )
