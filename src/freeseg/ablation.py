"""``make ablation``: the paper's ablations on the generated world.

- Table 2 (pooling of the φ̂ branch): stage 0 with each pooling, over three seeds, on the
  demo's frozen encoder, each evaluated through the demo's own commands; the SMP seed-0 run
  is the demo's own stage 0.
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

POOLINGS = (("mmp", 1), ("smoothed_max", 5), ("smoothed_min", 5))
SEEDS = (0, 1, 2)
DEMO_STAGE0 = ("smoothed_min", 5, 0)  # configs/synthetic/iclip.yaml as the demo runs it


def run_ablation(
    world: Path, runs: Path, results: Path, encoder: Path | None, refine_steps: int | None = None
) -> None:
    """Table 2 on the generated world: stage 0 with each pooling on the demo's frozen encoder,
    three seeds each (the table gives the mean and the spread, max − min, over the seeds);
    then Table 4 (see :func:`stage2_ablation`), with ``refine_steps`` as the demo's."""
    demo = Demo(world, runs, refine_steps, encoder=encoder)
    demo.stage0()  # reuses the demo's encoder (and stage 0) when they exist
    demo.stage1_eval()
    keys = ("mAP", "mMIoU", "mIoU_pls")
    rows = ["| pooling | k | zero-shot mAP (%) | mMIoU (%) | mIoU stage 1, PLS (%) |"]
    rows.append("|---|---:|---:|---:|---:|")
    for pooling, k in POOLINGS:
        pool = [
            f"--model.init_args.model.init_args.pooling={pooling}",
            f"--model.init_args.model.init_args.kernel_size={k}",
        ]
        values: dict[str, list[float]] = {key: [] for key in keys}
        for seed in SEEDS:
            if (pooling, k, seed) == DEMO_STAGE0:  # the demo's own stage 0 and its evaluation
                m = last_metrics(runs / "stage1_eval")
                for key in keys:
                    values[key].append(100 * m.get(f"val/{key}", float("nan")))
                continue
            run_dir = runs / f"ablation_{pooling}_seed{seed}"
            seeded = [*pool, f"--seed_everything={seed}"]
            demo.stage(
                f"stage 0 with {pooling} pooling, seed {seed}",
                run_dir,
                ["fit", *demo._iclip_args(), *seeded] + _world_overrides(world),
            )
            ckpt = run_dir / "logs/version_0/checkpoints/last.ckpt"
            demo.stage(
                f"stage 1 evaluation ({pooling}, seed {seed})",
                runs / f"ablation_{pooling}_seed{seed}_eval",
                ["validate", *demo._iclip_args(), *pool, f"--ckpt_path={ckpt}"]
                + _world_overrides(world),
            )
            m = last_metrics(runs / f"ablation_{pooling}_seed{seed}_eval")
            for key in keys:
                values[key].append(100 * m.get(f"val/{key}", float("nan")))
        cells = [_mean_spread(values[key]) for key in keys]
        rows.append(f"| {pooling} | {k} | " + " | ".join(cells) + " |")
    text = (
        "# Pooling ablation (Table 2), generated world\n\n"
        f"Mean ± spread (max − min) over seeds {', '.join(map(str, SEEDS))}.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + stage2_ablation(demo, runs)
    )
    atomic_write_text(results / "ablation.md", text)
    print(text)


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
    demo.stage1()
    demo.stage2(tuple(STAGE2))
    rows = ["# Partial pixel strategy (Table 4), generated world\n"]
    rows += ["| stage 2 trained on | mIoU (%) | mIoU + dense CRF (%) |", "|---|---:|---:|"]
    for name, label in STAGE2_ROWS.items():
        m = last_metrics(runs / f"{name}_test")
        cells = [f"{100 * m[k]:.1f}" if k in m else "—" for k in ("test/mIoU", "test/mIoU_crf")]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
