"""Image-text shards: tar files written with tarfile + PIL, read through ImageTextDataModule."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from tests.user_folder import add_member

from freeseg.data.datamodules import ImageTextDataModule
from freeseg.data.imagetext import WorkerShards, decode_sample, set_shuffle_epoch
from freeseg.data.shards import count_samples, expand_shards
from freeseg.data.skips import Skip

CONTEXT = 8


class StubTokenizer:
    """Picklable stand-in: caption → first CONTEXT character codes, zero-padded."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
        for row, text in enumerate(texts):
            codes = [ord(c) for c in text[:CONTEXT]]
            out[row, : len(codes)] = torch.tensor(codes)
        return out


def _image_bytes(rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext != "key":
                    add_member(tar, f"{sample['key'].decode()}.{ext}", data)


def _write_clean_shards(
    root: Path, shards: int, per_shard: int, key: str, stats: bool = False
) -> None:
    """``shard-{n:06d}.tar`` of decodable JPEGs captioned "a cat", keys ``key.format(shard, i)``,
    each with a ``_stats.json`` counting its samples when ``stats``."""
    rng = np.random.default_rng(1)
    for shard in range(shards):
        samples = [
            {
                "key": key.format(shard=shard, i=i).encode(),
                "jpg": _image_bytes(rng),
                "txt": b"a cat",
            }
            for i in range(per_shard)
        ]
        _write_shard(root / f"shard-{shard:06d}.tar", samples)
        if stats:
            (root / f"shard-{shard:06d}_stats.json").write_text(
                json.dumps({"successes": per_shard})
            )


@pytest.fixture
def shards(tmp_path):
    """Two shards, 6 samples each; one corrupt JPEG and one sample without .txt (mid-shard)."""
    rng = np.random.default_rng(0)
    good: dict[str, str] = {}
    for shard in range(2):
        samples = []
        for i in range(6):
            key = f"{shard:05d}{i:04d}"
            caption = f"caption number {shard}-{i}"
            fmt, ext = ("PNG", "png") if i == 4 else ("JPEG", "jpg")
            sample = {
                "key": key.encode(),
                ext: _image_bytes(rng, fmt),
                "txt": caption.encode(),
                "json": json.dumps({"key": key}).encode(),
            }
            if shard == 0 and i == 2:
                sample["jpg"] = b"\xff\xd8\xff\xe0 this is not really a jpeg"
            elif shard == 1 and i == 3:
                del sample["txt"]
            else:
                good[key] = caption
            samples.append(sample)
        _write_shard(tmp_path / f"shard-{shard:06d}.tar", samples)
    return tmp_path, good


def _module(root: Path, **kwargs) -> ImageTextDataModule:
    args = dict(batch_size=3, num_workers=0, image_size=16, shuffle_buffer=0)
    args.update(kwargs)
    dm = ImageTextDataModule(str(root / "shard-*.tar"), **args)
    dm.tokenizer = StubTokenizer()
    dm.setup("fit")
    return dm


def _collect(loader) -> tuple[list[str], list[dict]]:
    keys, batches = [], []
    for batch in loader:
        keys.extend(batch["key"])
        batches.append(batch)
    return keys, batches


def test_one_pass_skips_and_counts_broken_samples(shards, caplog):
    root, good = shards
    dm = _module(root)
    with caplog.at_level(logging.WARNING):
        keys, batches = _collect(dm.train_dataloader())
    assert sorted(keys) == sorted(good)  # every good sample, once
    batch = batches[0]
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["input_ids"].shape == (3, CONTEXT) and batch["input_ids"].dtype == torch.long
    for key, caption, ids in zip(batch["key"], batch["caption"], batch["input_ids"], strict=True):
        assert caption == good[key]
        assert ids[0].item() == ord(caption[0])
    assert sum(b["skipped"] for b in batches) == 2
    report = dm.skip_report()
    assert report["epoch"] == 2 and report["total"] == 2
    assert any(e.startswith("000000002 (cannot decode image") for e in report["examples"])
    assert "000010003 (missing .txt caption)" in report["examples"]
    assert "skipped 2 corrupt samples this epoch: 000000002" in caplog.text
    _collect(dm.train_dataloader())
    assert dm.skip_report()["epoch"] == 2 and dm.skip_report()["total"] == 4


def test_two_workers_split_shards_every_sample_once(shards):
    root, good = shards
    dm = _module(root, num_workers=2, shuffle_buffer=4, batch_size=4)
    keys, _ = _collect(dm.train_dataloader())
    assert sorted(keys) == sorted(good)
    assert dm.skip_report()["epoch"] == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_shuffle_order_is_fixed_by_seed_and_epoch(shards, workers):
    """Two epochs of one loader: each good sample once an epoch, in an order that changes from
    the first epoch to the second, that another loader of the same seed repeats whatever torch's
    global generator holds, and that another seed changes; a loader made at the trainer's
    epoch 1 (a resumed run) starts with the second epoch's order."""
    root, good = shards

    def two_epochs(seed: int, torch_seed: int, trainer_epoch: int = 0) -> list[list[str]]:
        torch.manual_seed(torch_seed)
        dm = _module(root, num_workers=workers, shuffle_buffer=4, batch_size=2, seed=seed)
        module = SimpleNamespace(tokenizer=dm.tokenizer)
        dm.trainer = SimpleNamespace(
            current_epoch=trainer_epoch, world_size=1, lightning_module=module
        )
        loader = dm.train_dataloader()
        return [_collect(loader)[0] for _ in range(2)]

    first, again, other = two_epochs(0, 0), two_epochs(0, 1), two_epochs(1, 0)
    assert all(sorted(keys) == sorted(good) for keys in first + other)
    assert first[0] != first[1]
    assert again == first
    assert other[0] != first[0]
    assert two_epochs(0, 2, trainer_epoch=1)[0] == first[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shuffle_buffer", [0, 4])
def test_each_rank_and_worker_reads_its_own_shards(tmp_path, monkeypatch, shuffle_buffer):
    """4 shards, 2 ranks of 2 workers: rank r reads shards r and r + 2 (``split_by_node``), one
    per worker (``split_by_worker``). An epoch of 24 samples gives each rank 6 batches of 2, 3
    from each worker cycling its 3-sample shard: unshuffled, every key of the rank's shards
    twice; shuffled (each worker holding fewer shards than there are), keys of those alone."""
    _write_clean_shards(tmp_path, shards=4, per_shard=3, key="s{shard}-{i}")
    monkeypatch.setenv("WORLD_SIZE", "2")  # webdataset's rank lookup reads RANK and WORLD_SIZE
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dm = ImageTextDataModule(
            str(tmp_path / "shard-*.tar"),
            batch_size=2,
            num_workers=2,
            image_size=16,
            shuffle_buffer=shuffle_buffer,
            epoch_size=24,
        )
        dm.trainer = SimpleNamespace(world_size=2, lightning_module=SimpleNamespace(tokenizer=None))
        dm.setup("fit")
        keys, batches = _collect(dm.train_dataloader())
        assert len(batches) == 6 and all(len(b["key"]) == 2 for b in batches)
        mine = {f"s{s}-{i}": 2 for s in (rank, rank + 2) for i in range(3)}
        if shuffle_buffer:
            assert set(keys) <= set(mine)
        else:
            assert Counter(keys) == mine


def test_worker_shards_read_a_new_permutation_every_pass_and_epoch():
    """Cycled and shuffled, every pass is a permutation of the shards, passes differ, the same
    seed and epoch (set through set_shuffle_epoch) repeat them and another epoch changes them;
    unshuffled one pass in list order, then the end."""
    urls = [{"url": f"u{i}"} for i in range(6)]

    def passes(epoch: int, **kwargs) -> list[list[str]]:
        shards = WorkerShards(**{"cycle": True, "shuffle": True, "seed": 5, **kwargs})
        set_shuffle_epoch(wds.DataPipeline(shards), epoch)
        stream, out = shards(iter(urls)), []
        for _ in range(3 if shards.cycle else 1):
            out.append([next(stream)["url"] for _ in urls])
            shards.read += 1  # a sample read in each pass
        assert shards.cycle or next(stream, None) is None
        return out

    first = passes(0)
    assert all(sorted(order) == [u["url"] for u in urls] for order in first)
    assert len({tuple(order) for order in first}) == 3
    assert passes(0) == first and passes(1) != first and passes(0, seed=6) != first
    assert passes(0, cycle=False, shuffle=False) == [[u["url"] for u in urls]]


def test_epoch_size_fixes_the_number_of_batches(shards):
    root, _ = shards
    dm = _module(root, epoch_size=14, batch_size=2, shuffle_buffer=3)
    loader = dm.train_dataloader()
    assert len(loader) == 7
    _, batches = _collect(loader)
    assert len(batches) == 7 and all(b["image"].shape == (2, 3, 16, 16) for b in batches)


def test_captions_are_tokenised_by_the_trained_modules_tokenizer(shards):
    """One tokenizer per run: the LightningModule's; a module without one gets no input_ids."""
    root, good = shards
    for tokenizer in (StubTokenizer(), None):
        dm = ImageTextDataModule(
            str(root / "shard-*.tar"), batch_size=3, num_workers=0, image_size=16, shuffle_buffer=0
        )
        module = SimpleNamespace(tokenizer=tokenizer)
        dm.trainer = SimpleNamespace(lightning_module=module, world_size=1)
        dm.setup("fit")
        assert dm.tokenizer is tokenizer
        batch = next(iter(dm.train_dataloader()))
        if tokenizer is None:
            assert "input_ids" not in batch and batch["image"].shape == (3, 3, 16, 16)
        else:
            for key, row in zip(batch["key"], batch["input_ids"].tolist(), strict=True):
                codes = [ord(c) for c in good[key][:CONTEXT]]
                assert row[: len(codes)] == codes


def test_val_shards_and_no_validation(shards):
    root, good = shards
    dm = ImageTextDataModule(str(root / "shard-*.tar"), val_shards=str(root / "shard-000001.tar"))
    dm.tokenizer = StubTokenizer()
    dm.num_workers = 0
    dm.setup("validate")
    keys, _ = _collect(dm.val_dataloader())
    assert sorted(keys) == sorted(k for k in good if k.startswith("00001"))
    assert dm.skip_report("val")["epoch"] == 1
    assert _module(root).val_dataloader() == []


def test_shard_patterns_and_counting(shards):
    root, _ = shards
    pattern = str(root / "shard-{000000..000001}.tar")
    assert [Path(u).name for u in expand_shards(pattern)] == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    with pytest.raises(FileNotFoundError, match=r"nothing-\*\.tar.*freeseg synth"):
        expand_shards(str(root / "nothing-*.tar"))
    assert count_samples(expand_shards(pattern)) == 12  # tar scan: 12 keys with an image
    (root / "shard-000000_stats.json").write_text(json.dumps({"successes": 100}))
    assert count_samples(expand_shards(pattern)) == 106


def test_decode_sample_reasons():
    rng = np.random.default_rng(3)
    image = _image_bytes(rng)
    ident = lambda img: img  # noqa: E731
    cases = {
        "no image (.jpg/.jpeg/.png/.webp)": {"txt": b"hi"},
        "caption is not UTF-8": {"jpg": image, "txt": b"\xff\xfe\xfa"},
        "empty caption": {"jpg": image, "txt": b"  \n"},
        "cannot identify image": {"jpg": b"garbage", "txt": b"hi"},
    }
    for reason, fields in cases.items():
        assert decode_sample({"__key__": "k", **fields}, ident) == Skip("k", reason)
    truncated = decode_sample({"__key__": "t", "jpg": image[: len(image) // 2], "txt": b"x"}, ident)
    assert isinstance(truncated, Skip) and truncated.reason.startswith("cannot decode image")
    ok = decode_sample(
        {"__key__": "w", "WEBP": _image_bytes(rng, "WEBP"), "txt": b" a cat "}, ident
    )
    assert ok["caption"] == "a cat" and ok["image"].size == (20, 24)


def _empty_tar(path: Path) -> None:
    with tarfile.open(path, "w"):
        pass


@pytest.mark.timeout(20)
@pytest.mark.parametrize("epoch_size", [None, 12])
def test_a_shard_without_samples_is_refused_naming_it(shards, epoch_size):
    root, _ = shards
    _empty_tar(root / "shard-000002.tar")
    with pytest.raises(ValueError, match=r"1 shard\(s\) hold no sample.*shard-000002\.tar$"):
        _module(root, epoch_size=epoch_size)


@pytest.mark.timeout(20)
def test_a_zero_byte_shard_is_refused_naming_it(shards):
    root, _ = shards
    (root / "shard-000002.tar").write_bytes(b"")
    with pytest.raises(ValueError, match=r"shard-000002\.tar: not a readable tar shard"):
        _module(root, epoch_size=12)


@pytest.mark.timeout(20)
def test_a_directory_matched_as_a_shard_is_refused_naming_it(shards):
    root, _ = shards
    (root / "shard-000002.tar").mkdir()
    with pytest.raises(IsADirectoryError, match=r"shard-000002\.tar is a directory, not a shard"):
        _module(root, epoch_size=12)
    with pytest.raises(IsADirectoryError, match=f"{root} is a directory"):
        expand_shards(str(root))


@pytest.mark.timeout(20)
def test_cycling_over_shards_that_read_nothing_stops_naming_them(tmp_path):
    """Stats that promise samples the tar does not hold: an error, not an endless loop."""
    _empty_tar(tmp_path / "shard-000000.tar")
    (tmp_path / "shard-000000_stats.json").write_text(json.dumps({"successes": 8}))
    dm = ImageTextDataModule(
        str(tmp_path / "shard-*.tar"), batch_size=2, num_workers=0, image_size=16, epoch_size=8
    )
    dm.tokenizer = StubTokenizer()
    dm.setup("fit")
    with pytest.raises(RuntimeError, match=r"shards .*shard-000000\.tar read no sample"):
        next(iter(dm.train_dataloader()))


@pytest.mark.timeout(20)
def test_one_pass_with_only_broken_samples_is_an_error_not_zero_steps(tmp_path):
    _write_shard(tmp_path / "shard-000000.tar", [{"key": b"k1", "jpg": b"junk", "txt": b"a"}])
    dm = _module(tmp_path)
    with pytest.raises(
        RuntimeError, match=r"train: no usable sample in .*shard-\*\.tar \(1 skipped: k1"
    ):
        list(dm.train_dataloader())


@pytest.mark.timeout(30)
def test_cycling_over_only_broken_samples_stops_naming_the_shards(tmp_path):
    broken = [{"key": f"k{i}".encode(), "jpg": b"junk", "txt": b"a cat"} for i in range(3)]
    _write_shard(tmp_path / "shard-000000.tar", broken)
    dm = _module(tmp_path, epoch_size=6, batch_size=2, shuffle_buffer=4)
    with pytest.raises(
        RuntimeError,
        match=r"no usable sample among 64 read from the shards .*shard-000000\.tar, e\.g\. k",
    ):
        next(iter(dm.train_dataloader()))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cut", ["in_header", "in_data"])
def test_samples_lost_to_a_truncated_shard_are_counted(shards, cut):
    root, good = shards
    path = root / "shard-000001.tar"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    first_of_key3 = next(m for m in members if m.name.startswith("000010003."))
    complete = {m.name.split(".")[0] for m in members if m.offset < first_of_key3.offset}
    at = first_of_key3.offset + (100 if cut == "in_header" else 512 + 10)
    path.write_bytes(path.read_bytes()[:at])
    (root / "shard-000001_stats.json").write_text(json.dumps({"successes": 6}))
    keys, batches = _collect(_module(root).train_dataloader())
    assert set(keys) >= {k for k in good if k.startswith("00000") or k in complete}
    assert not set(keys) - set(good)
    # 1 broken sample of shard 0, and the samples of shard 1 past the cut (6 - 3)
    assert sum(b["skipped"] for b in batches) == 1 + (6 - len(complete))
    examples = [e for b in batches for e in b["skipped_examples"]]
    assert any(e.startswith(f"{path} (") for e in examples), examples


@pytest.mark.parametrize("shuffle_buffer", [0, 3])
def test_an_epoch_cut_inside_a_shard_is_not_counted_as_lost_samples(tmp_path, shuffle_buffer):
    """A cycled loader without workers stops each epoch mid-shard; the next epoch starts a new
    pass, and the shard the last one left is not a truncated shard (no skip, no warning)."""
    _write_clean_shards(tmp_path, shards=2, per_shard=6, key="{shard:05d}{i:04d}", stats=True)
    dm = _module(tmp_path, epoch_size=8, batch_size=2, shuffle_buffer=shuffle_buffer)
    loader = dm.train_dataloader()
    for _ in range(3):
        _, batches = _collect(loader)
        assert len(batches) == 4
        assert sum(b["skipped"] for b in batches) == 0, [b["skipped_examples"] for b in batches]
    assert dm.skip_report()["total"] == 0
