"""The report of ``make demo``: its results table and the joined figure of every stage.

Read from the run folders' CSV logs and saved figure panels, so a rerun that reuses every
stage writes the same report.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from freeseg.data.atomic import atomic_write_text
from freeseg.stages.reports import load_figure, save_figure


def metric_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(epoch, value) pairs of one logged metric from a CSVLogger run."""
    path = run_dir / "logs/version_0/metrics.csv"
    rows = list(csv.DictReader(path.open()))
    return [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def last_metrics(run_dir: Path) -> dict[str, float]:
    """Last logged value of every metric of a CSVLogger run (``{}`` if it logged none)."""
    path = run_dir / "logs/version_0/metrics.csv"
    if not path.exists():
        return {}
    values: dict[str, float] = {}
    for row in csv.DictReader(path.open()):
        values.update({k: float(v) for k, v in row.items() if v and k not in ("epoch", "step")})
    return values


def write_grid(path: Path, runs: Path) -> None:
    """image | ITSM | Y_seg1 | Y_seg2 | Y_seg2 + CRF | ground truth for the first val images.

    Joins the figures of the stage-1 evaluation and of the partial-pixel stage-2 test, which
    show the same first images of the val split; refuses if their ground truths differ.
    """
    log = "logs/version_0"
    sources = (
        runs / "stage1_eval" / log / "stage1_val_grid.npz",
        runs / "refine_pp_test" / log / "stage2_test_grid.npz",
    )
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:  # e.g. stages reused from an older version that saved no panels
        print(f"[demo] no grid: {', '.join(missing)} missing; delete its run folder and rerun")
        return
    _, stage1 = load_figure(sources[0])
    titles2, stage2 = load_figure(sources[1])
    rows = []
    for one, two in zip(stage1, stage2, strict=False):
        if not np.array_equal(one[-1][1], two[-1][1]):
            raise ValueError("the stage-1 and stage-2 figures show different images")
        rows.append(one[:3] + two[1:])
    save_figure(path, ["image", "ITSM, selected labels", "Y_seg1", *titles2[1:]], rows)
    print(f"[demo] grid: {path}")


def write_results(
    results: Path,
    runs: Path,
    timings: dict[str, float],
    jobs: int = 1,
    total: float | None = None,
) -> None:
    """``results.md``: the Table-5 rows, stage 0's and the encoder's numbers, and the wall
    times (``jobs`` stages ran at once; ``total``: the whole chain's wall time)."""
    s1 = last_metrics(runs / "stage1_eval")
    tests = {name: last_metrics(runs / f"{name}_test") for name in ("refine_pp", "oracle")}

    def cell(values: dict[str, float], key: str) -> str:
        return f"{100 * values[key]:.1f}" if key in values else "—"

    lines = ["# Demo results (generated world, CPU)", ""]
    lines += ["## Table 5 shape: mIoU (%) on the val split", ""]
    lines += ["| method | stage | mIoU (%) |", "|---|---:|---:|"]
    lines += [f"| direct argmax of the ITSM | 1 | {cell(s1, 'val/mIoU_argmax')} |"]
    lines += [f"| partial label strategy (PLS) | 1 | {cell(s1, 'val/mIoU_pls')} |"]
    truth = cell(s1, "val/mIoU_pls_true_labels")
    lines += [f"| PLS given the ground-truth image labels (diagnostic) | 1 | {truth} |"]
    lines += [f"| CLIP + K-means (Table 6) | 1 | {cell(s1, 'val/mIoU_kmeans')} |"]
    lines += [f"| CLIP + spectral clustering (Table 6) | 1 | {cell(s1, 'val/mIoU_spectral')} |"]
    lines += [
        f"| PLS → PSPNet, partial pixel (Eq. 9–10) | 2 | {cell(tests['refine_pp'], 'test/mIoU')} |"
    ]
    lines += [
        f"| PLS → PSPNet, partial pixel + dense CRF | 2 | {cell(tests['refine_pp'], 'test/mIoU_crf')} |"
    ]
    lines += [
        f"| oracle: same PSPNet on ground-truth masks | — | {cell(tests['oracle'], 'test/mIoU')} |"
    ]
    lines += [f"| oracle + dense CRF | — | {cell(tests['oracle'], 'test/mIoU_crf')} |"]
    lines += [
        "",
        f"Stage 0 on val: zero-shot mAP {cell(s1, 'val/mAP')} %, mMIoU {cell(s1, 'val/mMIoU')} %",
        "",
        f"Stage 1's label sets P against the ground-truth classes: precision "
        f"{cell(s1, 'val/labels_precision')} %, recall {cell(s1, 'val/labels_recall')} %",
        "",
    ]
    lines += ["## The frozen image encoder: class-token attention A on the val objects", ""]
    lines += [
        f"A's mass on object pixels {cell(s1, 'val/A_mass_fg')} %, Jaccard of its 60 %-mass "
        f"mask with the objects {cell(s1, 'val/A_jaccard')} %",
        "",
    ]
    curve = metric_curve(runs / "encoder", "val/A_jaccard") if (runs / "encoder").is_dir() else []
    if curve:
        lines += ["| stage-0a epoch | A Jaccard (%) |", "|---:|---:|"]
        lines += [f"| {e} | {100 * v:.1f} |" for e, v in curve]
    if timings:
        at_once = f"; up to {jobs} at once, so they overlap" if jobs > 1 else ""
        lines += ["", f"Wall time of each stage (when it ran{at_once}):", ""]
        lines += [f"- {name}: {seconds:.0f} s" for name, seconds in timings.items()]
    if total is not None:
        lines += ["", f"Wall time of this run of the chain: {total:.0f} s"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(results / "results.md", text)
    print(text)
