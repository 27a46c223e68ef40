"""Stage 1 output: pseudo-masks from one encoder pass per image, calibrated over the dataset.

``freeseg predict`` runs :meth:`ICLIPModule.predict_step`, which returns per image a compact
record (scores ``(C,)``, raw ITSM ``(C, h, w)``). :class:`PseudoMaskWriter` stores each record
as ``.records/{id}.pt``; at the end of the epoch it takes the per-class min/max of the scores
over every record (all ranks), then per image applies the Partial Label Strategy (Eq. 7–8) and
the partial pixel strategy (Eq. 9) and writes ``{id}.png`` at the original size, and last the
manifest. A rerun skips the encoder for every batch whose records all exist, so an interrupted
run, rerun, writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn
from tqdm.auto import tqdm

from freeseg.data.palette import save_label_png
from freeseg.data.pseudomasks import (
    FEW_CREDIBLE,
    FINGERPRINTS,
    MANIFEST,
    MANIFEST_FORMAT,
    RECORDS,
    RECORDS_META,
    check_fields,
    file_sha256,
    image_fingerprints,
    load_record,
    pseudo_label_map,
    record_path,
    save_record,
    write_json,
)
from freeseg.ops.first_stage import PartialLabelConfig, first_stage
from freeseg.ops.partial_labels import score_bounds
from freeseg.stages.distributed import first_claims, gather_objects, reduce_bounds


def _datamodule(trainer: pl.Trainer) -> Any:
    return getattr(trainer, "datamodule", None)


LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_dir(pseudo_dir: Path) -> Path:
    """Take ``pseudo_dir/.lock`` for this process; refuse while another live process holds it.

    A lock left by a killed run (its process is gone) is taken over, so a rerun resumes.

    Raises:
        FileExistsError: another running process writes into ``pseudo_dir``.
    """
    lock = pseudo_dir / LOCK
    pseudo_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = lock.read_text().strip() if lock.is_file() else ""
            pid = int(text) if text.isdigit() else 0
            if pid and pid != os.getpid() and _alive(pid):
                raise FileExistsError(
                    f"{pseudo_dir} is being written by another predict (process {pid}, {lock}); "
                    "wait for it to finish, or use another pseudo_dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer was killed
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return lock
    raise FileExistsError(f"could not take {lock}")


def _require_stage1(pl_module: pl.LightningModule) -> None:
    for name in ("partial_label_config", "stage1_settings", "classes"):
        if not hasattr(pl_module, name):
            raise TypeError(
                f"PseudoMaskWriter needs a stage-1 module (ICLIPModule); "
                f"{type(pl_module).__name__} has no {name!r}"
            )


class PseudoMaskWriter(BasePredictionWriter):
    """Writes ``{pseudo_dir}/{id}.png`` (0..C, 255 = not credible) and ``manifest.json``.

    Thresholds and the strategy are the module's (``ICLIPModule.strict`` ...), so stage-1
    validation and the pseudo-masks use the same values; the manifest records them.

    Args:
        pseudo_dir: output directory; default the datamodule's ``pseudo_dir``.
        overwrite: recompute every record (encoder pass) even when it exists; also needed to
            reuse a directory whose records were made with another checkpoint or class list.
    """

    def __init__(self, pseudo_dir: str | None = None, overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.pseudo_dir_arg = pseudo_dir
        self.overwrite = overwrite
        self.pseudo_dir = Path(pseudo_dir) if pseudo_dir else Path()
        self.meta: dict[str, Any] = {}
        self._ids: list[str] = []
        self._prints: dict[str, str] = {}
        self._lock: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        chosen = self.pseudo_dir_arg or getattr(_datamodule(trainer), "pseudo_dir", None)
        if not chosen:
            raise ValueError(
                "PseudoMaskWriter: set its pseudo_dir, or use a datamodule with a pseudo_dir "
                "(freeseg.data.pseudomasks.PseudoMaskDataModule)"
            )
        self.pseudo_dir = Path(chosen)
        self._ids = []

    # ----------------------------------------------------------------------- start
    def _records_meta(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """What the records depend on: weights, vocabulary, input size, window settings."""
        ckpt = trainer.ckpt_path
        return {
            "checkpoint": None if ckpt is None else str(ckpt),
            "checkpoint_sha256": None if ckpt is None else file_sha256(ckpt),
            "image_size": getattr(_datamodule(trainer), "image_size", None),
            **pl_module.stage1_settings(),  # type: ignore[operator]
        }

    def _check_classes(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data_classes = getattr(_datamodule(trainer), "classes", None)
        if data_classes is not None and data_classes.names != pl_module.classes.names:  # type: ignore[union-attr]
            raise ValueError(
                "model.init_args.classes and data.init_args.classes name different class lists "
                f"({len(pl_module.classes)} vs {len(data_classes)} classes); use one file"  # type: ignore[arg-type]
            )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _require_stage1(pl_module)
        self._check_classes(trainer, pl_module)
        if trainer.predict_loop.return_predictions:
            rank_zero_warn(
                "predict keeps every stage-1 record in memory as well as on disk; set "
                "return_predictions: false (top level of the predict config) to avoid it"
            )
        self.meta = self._records_meta(trainer, pl_module)
        records, meta_path = self.pseudo_dir / RECORDS, self.pseudo_dir / RECORDS / RECORDS_META
        stale = {k: v for k, v in self.meta.items() if k != "checkpoint"}
        if meta_path.is_file() and not self.overwrite:
            hint = "set the writer's overwrite: true to recompute them, or use another pseudo_dir"
            check_fields(_read_json(meta_path), stale, f"stage-1 records in {records}", hint)
        if trainer.is_global_zero:
            self._lock = lock_dir(self.pseudo_dir)
            # A manifest means "complete": remove it before anything here changes.
            (self.pseudo_dir / MANIFEST).unlink(missing_ok=True)
            if self.overwrite and records.is_dir():
                shutil.rmtree(records)
            write_json(meta_path, self.meta)
        self._prints = self._refresh_records(trainer)
        trainer.strategy.barrier()

    def _refresh_records(self, trainer: pl.Trainer) -> dict[str, str]:
        """Drop records whose image changed under the same id; note the images' fingerprints."""
        split_set = getattr(_datamodule(trainer), "split_set", None)
        if split_set is None:
            return {}
        prints = image_fingerprints(split_set())
        if trainer.is_global_zero:
            path = self.pseudo_dir / RECORDS / FINGERPRINTS
            old = _read_json(path) if path.is_file() else {}
            for item_id, fingerprint in prints.items():
                if old.get(item_id) != fingerprint:
                    record_path(self.pseudo_dir, item_id).unlink(missing_ok=True)
            write_json(path, {**old, **prints})
        return prints

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._unlock()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._unlock()

    def on_predict_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Tells predict_step which images are done; it skips the encoder only when the whole
        # batch is, so every image's record comes from the same batch as in a fresh run.
        batch["done"] = [record_path(self.pseudo_dir, i).is_file() for i in batch["id"]]

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._ids.extend(batch["id"])
        for record in prediction or []:
            path = record_path(self.pseudo_dir, record["id"])
            if not path.is_file():
                save_record(path, record["id"], record["size"], record["scores"], record["raw"])

    # ------------------------------------------------------------------------- end
    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ids = first_claims(list(dict.fromkeys(self._ids)))  # each image on one rank
        config: PartialLabelConfig = pl_module.partial_label_config  # type: ignore[assignment]
        scores = [load_record(record_path(self.pseudo_dir, i))["scores"] for i in ids]
        num_classes = len(pl_module.classes)  # type: ignore[arg-type]
        stacked = torch.stack(scores) if scores else torch.zeros(0, num_classes)
        lo, hi = reduce_bounds(trainer, *score_bounds(stacked), pl_module.device)
        stats: dict[str, tuple[list[int], int, int]] = {}
        bar = tqdm(ids, desc="pseudo-masks", disable=not trainer.is_global_zero)
        for item_id in bar:
            record = load_record(record_path(self.pseudo_dir, item_id))
            size = (int(record["size"][0]), int(record["size"][1]))
            raw = record["raw"].to(pl_module.device)  # resizing on the GPU when there is one
            out = first_stage(raw, record["scores"], lo, hi, size, config)
            label_map = pseudo_label_map(out.seg, out.credible)
            save_label_png(self.pseudo_dir / f"{item_id}.png", label_map)
            chosen = out.labels.nonzero().flatten().tolist()
            stats[item_id] = (chosen, int(out.credible.sum()), int(out.credible.numel()))
        merged: dict[str, tuple[list[int], int, int]] = {}
        for part in gather_objects(stats):
            merged.update(part)
        if trainer.is_global_zero:
            manifest = build_manifest(pl_module, self.meta, config, lo, hi, merged)
            if self._prints:
                manifest["fingerprints"] = {i: self._prints[i] for i in manifest["ids"]}
            write_json(self.pseudo_dir / MANIFEST, manifest)
            fraction = manifest["counts"]["credible_fraction"]
            if fraction < FEW_CREDIBLE:
                rank_zero_warn(
                    f"{self.pseudo_dir}: only {fraction:.4f} of the pixels are credible; stage 2 "
                    "would train on almost none (check background t and delta Δt)"
                )
        trainer.strategy.barrier()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def build_manifest(
    pl_module: pl.LightningModule,
    meta: dict[str, Any],
    config: PartialLabelConfig,
    lo: torch.Tensor,
    hi: torch.Tensor,
    stats: dict[str, tuple[list[int], int, int]],
) -> dict[str, Any]:
    """The manifest: everything stage 2 must agree with, and what stage 1 produced.

    Deterministic for the same records: no timestamps, no paths of the output, sorted ids.
    """
    names: list[str] = pl_module.classes.display_names  # type: ignore[union-attr,assignment]
    per_class = [0] * len(names)
    credible = pixels = without = 0
    for chosen, n_credible, n_pixels in stats.values():
        for c in chosen:
            per_class[c] += 1
        without += not chosen
        credible += n_credible
        pixels += n_pixels
    return {
        "format": MANIFEST_FORMAT,
        "classes": pl_module.classes.names,  # type: ignore[union-attr]
        "templates": meta["templates"],
        "thresholds": {
            "strict": config.strict,
            "loose": config.loose,
            "background": config.background,
            "delta": config.delta,
        },
        "strategy": config.strategy,
        "partial_pixel": config.partial_pixel,
        "checkpoint": {"path": meta["checkpoint"], "sha256": meta["checkpoint_sha256"]},
        "image_size": meta["image_size"],
        "sliding_window": meta["sliding_window"],
        "calibration": {"min": lo.tolist(), "max": hi.tolist()},
        "ids": sorted(stats),
        "counts": {
            "images": len(stats),
            "labels_per_class": dict(zip(names, per_class, strict=True)),
            "images_without_labels": without,
            "credible_fraction": credible / pixels if pixels else 0.0,
        },
    }
