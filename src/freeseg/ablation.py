"""``make ablation``: the paper's ablations on the generated world.

- Table 2 (pooling of the φ̂ branch): stage 0 with each pooling (and SMP with its border
  windows averaged over in-grid tokens), over three seeds, on the demo's frozen encoder, each
  evaluated through the demo's own commands; the SMP seed-0 run is the demo's own stage 0.
- Table 4 (partial pixel strategy): stage 2 on pseudo-masks with and without the partial
  pixel strategy, and with Eq. 10 exactly as written (no class balance); the partial-pixel
  run is the demo's own stage 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from freeseg.data.atomic import atomic_write_text
from freeseg.demo import STAGE2, Demo, _world_overrides
from freeseg.demo_report import last_metrics

# Table 2's rows: name → (label, ICLIP settings, as command-line values). The name names the
# row's run directories, ``ablation_<name>_seed<s>``; every row has the same seeds and budget.
TABLE2 = {
    "mmp": ("masked max (ICLIP)", {"pooling": "mmp", "kernel_size": "1"}),
    "smoothed_max": ("smoothed max", {"pooling": "smoothed_max", "kernel_size": "5"}),
    "smoothed_min": ("smoothed min (SMP)", {"pooling": "smoothed_min", "kernel_size": "5"}),
    "smoothed_min_in_grid": (
        "smoothed min (SMP), border windows averaged over in-grid tokens",
        {"pooling": "smoothed_min", "kernel_size": "5", "count_include_pad": "false"},
    ),
}
SEEDS = (0, 1, 2)
DEMO_STAGE0 = ("smoothed_min", 0)  # row and seed of configs/synthetic/iclip.yaml, run by the demo
ICLIP_KEY = "--model.init_args.model.init_args."
TABLE2_KEYS = ("mAP", "mMIoU", "mIoU_pls")


def run_ablation(
    world: Path,
    runs: Path,
    results: Path,
    encoder: Path | None,
    refine_steps: int | None = None,
    jobs: int = 1,
) -> None:
    """Tables 2 and 4 on the generated world (see :func:`pooling_ablation` and
    :func:`stage2_ablation`), with ``refine_steps`` as the demo's and ``jobs`` stages at once;
    writes ``ablation.md``."""
    demo = Demo(world, runs, refine_steps, encoder=encoder, jobs=jobs)
    table2 = submit_pooling_runs(demo, runs)
    submit_stage2_runs(demo)
    demo.run()  # both tables' stages, side by side
    text = pooling_table(table2) + "\n" + stage2_table(runs)
    atomic_write_text(results / "ablation.md", text)
    print(text)


def pooling_ablation(demo: Demo, runs: Path) -> str:
    """Table 2 on the generated world: stage 0 for each row of ``TABLE2`` on the demo's frozen
    encoder, seeds ``SEEDS`` each, each evaluated; returns the markdown table (the mean and the
    spread, max − min, over the seeds). The SMP seed-0 run is the demo's own stage 0."""
    evaluated = submit_pooling_runs(demo, runs)
    demo.run()
    return pooling_table(evaluated)


def submit_pooling_runs(demo: Demo, runs: Path) -> dict[str, list[Path]]:
    """Submit Table 2's runs; returns each row's evaluation run directories, one per seed."""
    demo.stage0()  # reuses the demo's encoder (and stage 0) when they exist
    demo.stage1_eval()
    evaluated: dict[str, list[Path]] = {}
    for name, (_, settings) in TABLE2.items():
        evaluated[name] = [
            runs / "stage1_eval"  # the demo's own stage 0 and its evaluation
            if (name, seed) == DEMO_STAGE0
            else _stage0_run(demo, runs, name, settings, seed)
            for seed in SEEDS
        ]
    return evaluated


def pooling_table(evaluated: dict[str, list[Path]]) -> str:
    """Table 2 from each row's finished evaluation runs (see :func:`submit_pooling_runs`)."""
    rows = ["| pooling | k | zero-shot mAP (%) | mMIoU (%) | mIoU stage 1, PLS (%) |"]
    rows.append("|---|---:|---:|---:|---:|")
    for name, (label, settings) in TABLE2.items():
        values: dict[str, list[float]] = {key: [] for key in TABLE2_KEYS}
        for run_dir in evaluated[name]:
            m = last_metrics(run_dir)
            for key in TABLE2_KEYS:
                values[key].append(100 * m.get(f"val/{key}", float("nan")))
        cells = [_mean_spread(values[key]) for key in TABLE2_KEYS]
        rows.append(f"| {label} | {settings['kernel_size']} | " + " | ".join(cells) + " |")
    return (
        "# Pooling ablation (Table 2), generated world\n\n"
        f"Mean ± spread (max − min) over seeds {', '.join(map(str, SEEDS))}.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def _stage0_run(demo: Demo, runs: Path, name: str, settings: dict[str, str], seed: int) -> Path:
    """Stage 0 of one Table-2 row and seed, then its stage-1 evaluation; returns the latter's
    run directory."""
    overrides = [f"{ICLIP_KEY}{key}={value}" for key, value in settings.items()]
    run_dir, world = runs / f"ablation_{name}_seed{seed}", demo.world
    demo.stage(
        f"stage 0 with {name} pooling, seed {seed}",
        run_dir,
        ["fit", *demo._iclip_args(), *overrides, f"--seed_everything={seed}"]
        + _world_overrides(world),
    )
    ckpt = run_dir / "logs/version_0/checkpoints/last.ckpt"
    eval_dir = runs / f"ablation_{name}_seed{seed}_eval"
    demo.stage(
        f"stage 1 evaluation ({name}, seed {seed})",
        eval_dir,
        ["validate", *demo._iclip_args(), *overrides, f"--ckpt_path={ckpt}"]
        + _world_overrides(world),
    )
    return eval_dir


def _mean_spread(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {max(values) - min(values):.1f}"


STAGE2_ROWS = {
    "refine_pp": "partial pixel (Eq. 9–10), class-balanced loss",
    "refine_all": "all pseudo-labelled pixels, class-balanced loss",
    "refine_pp_paper": "partial pixel, Eq. 10 as written (no class balance)",
    "oracle": "oracle: the same PSPNet on the ground-truth masks",
}


def stage2_ablation(demo: Demo, runs: Path) -> str:
    """Table 4 on the generated world: stage 2 with and without the partial pixel strategy
    (one seed, the demo's budget); returns the markdown table."""
    submit_stage2_runs(demo)
    demo.run()
    return stage2_table(runs)


def submit_stage2_runs(demo: Demo) -> None:
    """Submit Table 4's runs (the demo's stage 1 and every stage-2 variant with the oracle)."""
    demo.stage1()
    demo.stage2(tuple(STAGE2))


def stage2_table(runs: Path) -> str:
    """Table 4 from the finished stage-2 test runs."""
    rows = ["# Partial pixel strategy (Table 4), generated world\n"]
    rows += ["| stage 2 trained on | mIoU (%) | mIoU + dense CRF (%) |", "|---|---:|---:|"]
    for name, label in STAGE2_ROWS.items():
        m = last_metrics(runs / f"{name}_test")
        cells = [f"{100 * m[k]:.1f}" if k in m else "—" for k in ("test/mIoU", "test/mIoU_crf")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
