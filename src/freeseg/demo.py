"""``make demo``: the pipeline on the generated world, on CPU, reusing finished stages.

Every stage is an ordinary ``freeseg`` command (the same configs and overrides a user runs
on their own data); a stage that finished before is not run again. Results go to
``results/demo/results.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

from freeseg.cli import main as freeseg
from freeseg.data.atomic import atomic_write_text

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _stage(name: str, done: Path, run: Callable[[], None], timings: dict[str, float]) -> None:
    """Run ``run`` unless ``done`` exists; write ``done`` afterwards (the completion mark)."""
    if done.exists():
        print(f"[demo] {name}: already done ({done}), reused")
        return
    print(f"[demo] {name} ...", flush=True)
    start = time.perf_counter()
    run()
    timings[name] = time.perf_counter() - start
    atomic_write_text(done, json.dumps({"seconds": round(timings[name], 1)}))


def _world_overrides(world: Path, prefix: str = "") -> list[str]:
    classes = str(world / "classes.txt")
    data = "--data.init_args."
    return [
        f"--model.init_args.classes={classes}",
        f"{data}image_text.init_args.train_shards={world / 'shards/*.tar'}",
        f"{data}segmentation.init_args.root={world / 'voc'}",
        f"{data}segmentation.init_args.classes={classes}",
    ]


def _run_dir_args(run_dir: Path) -> list[str]:
    return [
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.logger.init_args.version=0",
    ]


def _metric_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(epoch, value) pairs of one logged metric from a CSVLogger run."""
    path = run_dir / "logs/version_0/metrics.csv"
    rows = list(csv.DictReader(path.open()))
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def run_demo(world: Path, runs: Path, results: Path) -> None:
    timings: dict[str, float] = {}
    _stage(
        "world",
        world / "world.json",
        lambda: freeseg(["synth", str(world)]),
        timings,
    )
    encoder_dir, iclip_dir = runs / "encoder", runs / "iclip"
    encoder_file = encoder_dir / "vit.pth"
    _stage(
        "stage 0a: caption-tag pretraining of the image encoder",
        encoder_dir / "done.json",
        lambda: freeseg(
            ["fit", "--config", str(CONFIGS / "synthetic/encoder.yaml")]
            + [f"--model.init_args.export={encoder_file}"]
            + _world_overrides(world)
            + _run_dir_args(encoder_dir)
        ),
        timings,
    )
    _stage(
        "stage 0: ICLIP with smoothed min pooling (frozen encoder)",
        iclip_dir / "done.json",
        lambda: freeseg(
            ["fit", "--config", str(CONFIGS / "synthetic/iclip.yaml")]
            + [
                "--model.init_args.model.init_args.image_encoder.init_args.checkpoint="
                f"{encoder_file}"
            ]
            + _world_overrides(world)
            + _run_dir_args(iclip_dir)
        ),
        timings,
    )
    write_results(results, encoder_dir, iclip_dir, timings)


def write_results(
    results: Path, encoder_dir: Path, iclip_dir: Path, timings: dict[str, float]
) -> None:
    lines = ["# Demo results (generated world, CPU)", ""]
    lines += ["## Stage 0a: image encoder, caption-tag pretraining", ""]
    lines += ["| epoch | val mAP (tag scores) |", "|---:|---:|"]
    lines += [f"| {e} | {v:.3f} |" for e, v in _metric_curve(encoder_dir, "val/mAP")]
    lines += ["", "## Stage 0: ICLIP + SMP, frozen encoder", ""]
    lines += ["| epoch | zero-shot mAP | mMIoU | best t |", "|---:|---:|---:|---:|"]
    m_ap = dict(_metric_curve(iclip_dir, "val/mAP"))
    mmiou = dict(_metric_curve(iclip_dir, "val/mMIoU"))
    thr = dict(_metric_curve(iclip_dir, "val/mMIoU_threshold"))
    for epoch in sorted(m_ap):
        lines.append(f"| {epoch} | {m_ap[epoch]:.3f} | {mmiou[epoch]:.3f} | {thr[epoch]:.2f} |")
    if timings:
        lines += ["", "Wall time of the stages run this time:", ""]
        lines += [f"- {name}: {seconds:.0f} s" for name, seconds in timings.items()]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results / "results.md", text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=Path, default=Path("data/world"))
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    args = parser.parse_args()
    start = time.perf_counter()
    run_demo(args.world, args.runs, args.results)
    print(f"[demo] total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
