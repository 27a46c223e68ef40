"""``make demo``: the pipeline on the generated world, on CPU, reusing finished stages.

Every stage is an ordinary ``freeseg`` command (the same configs and overrides a user runs
on their own data); a stage that finished before is not run again, and stages that do not
read each other run side by side (``--jobs``, see :mod:`freeseg.stage_queue`). Results go to
``results/demo/results.md`` and ``results/demo/grid.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from freeseg.cli import main as freeseg
from freeseg.data.atomic import atomic_write_bytes, atomic_write_text
from freeseg.demo_report import last_metrics, write_grid, write_results
from freeseg.provenance import source_commit
from freeseg.shipped import config_dir, shipped_encoder
from freeseg.stage_queue import StageFailed, StageQueue, default_jobs, done_seconds

CONFIGS = config_dir()
# The stand-in for DINO's weights on the generated world, made by `make encoder`.
SHIPPED_ENCODER = shipped_encoder()
# What the chain's stages import (torch, Lightning, timm, transformers, smp, ...): imported
# once by the server every stage is forked from (see freeseg.stage_queue), not once a stage.
PRELOAD = (
    "freeseg.lightning_cli",
    "freeseg.data.datamodules",
    "freeseg.data.pretrain",
    "freeseg.data.pseudomasks",
    "freeseg.models.iclip",
    "freeseg.stages.callbacks",
    "freeseg.stages.dino_module",
    "freeseg.stages.iclip_module",
    "freeseg.stages.refine_module",
    "freeseg.stages.tag_module",
)
# Stage-0a recipes: config, and whether it reads the class names (for its validation mAP).
ENCODER_RECIPES = {
    "tags": ("synthetic/encoder.yaml", True),  # caption tags + patch dropout (shipped)
    "dino": ("synthetic/encoder_dino.yaml", False),  # DINO self-distillation, images alone
}


def _world_overrides(world: Path) -> list[str]:
    """Stage-0 data of a world folder (shards/, voc/, classes.txt) for the pretrain data module."""
    classes = str(world / "classes.txt")
    data = "--data.init_args."
    return [
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


class Demo:
    """The chain of ``freeseg`` commands behind ``make demo``, each stage run at most once."""

    def __init__(
        self,
        world: Path,
        runs: Path,
        refine_steps: int | None = None,
        extra: dict[str, list[str]] | None = None,
        encoder: Path | None = None,
        recipe: str = "tags",
        jobs: int = 1,
    ) -> None:
        """``extra`` maps a run directory's name (``encoder``, ``iclip``, ``stage1_eval``,
        ``pseudo_pp``, ``refine_pp``, ``oracle_test``, ...) to more command-line overrides.
        ``encoder`` is a pretrained image-encoder file (the shipped stand-in, DINO's, yours);
        None trains the stand-in on the world first (stage 0a) with ``recipe`` (a key of
        ``ENCODER_RECIPES``). ``jobs`` stages run at once (1: each in this process, in the
        order submitted; more: queued until :meth:`run`)."""
        self.world, self.runs, self.refine_steps = world, runs, refine_steps
        self.extra = extra or {}
        self.queue = StageQueue(jobs, freeseg, preload=PRELOAD)
        self.timings = self.queue.timings
        self.train_encoder = encoder is None
        self.recipe = ENCODER_RECIPES[recipe]
        self.encoder_file = runs / "encoder/vit.pth" if encoder is None else encoder
        self.iclip_ckpt = runs / "iclip/logs/version_0/checkpoints/last.ckpt"

    def stage(
        self, name: str, run_dir: Path, args: list[str], logged: bool = True, wide: bool = False
    ) -> None:
        """Run (or, with ``jobs`` > 1, queue) one ``freeseg`` command into ``run_dir`` unless
        it finished before; ``wide``: alone, with every core (see `StageQueue.submit`)."""
        where = _run_dir_args(run_dir) if logged else [f"--trainer.default_root_dir={run_dir}"]
        full = args + where + self.extra.get(run_dir.name, [])
        self.queue.submit(name, run_dir, full, wide=wide)

    def run(self) -> None:
        """Run the queued stages (nothing to do with ``jobs=1``): see `StageQueue.run`."""
        self.queue.run()

    def _classes(self, key: str) -> str:
        return f"--{key}.init_args.classes={self.world / 'classes.txt'}"

    def _iclip_args(self) -> list[str]:
        return [
            "--config",
            str(CONFIGS / "synthetic/iclip.yaml"),
            "--model.init_args.model.init_args.image_encoder.init_args.checkpoint="
            f"{self.encoder_file}",
            self._classes("model"),
        ]

    def stage0(self) -> None:
        if self.train_encoder:
            config, reads_classes = self.recipe
            self.stage(
                f"stage 0a: pretraining of the image encoder ({config})",
                self.runs / "encoder",
                ["fit", "--config", str(CONFIGS / config)]
                + [f"--model.init_args.export={self.encoder_file}"]
                + ([self._classes("model")] if reads_classes else [])
                + _world_overrides(self.world),
                wide=True,  # stage 0 and everything after it wait for it
            )
        elif not self.encoder_file.is_file():
            raise FileNotFoundError(
                f"image encoder file not found: {self.encoder_file} (make encoder writes the "
                "shipped one; --train_encoder trains one on the world's images)"
            )
        else:
            print(f"[demo] stage 0a: pretrained image encoder {self.encoder_file}")
        self.stage(
            "stage 0: ICLIP with smoothed min pooling (frozen encoder)",
            self.runs / "iclip",
            ["fit", *self._iclip_args()] + _world_overrides(self.world),
            wide=True,  # stages 1 and 2 wait for it, and it gains from every core
        )

    def stage1_eval(self) -> None:
        self.stage(
            "stage 1 evaluation on val (PLS, direct argmax, clustering baselines)",
            self.runs / "stage1_eval",
            ["validate", *self._iclip_args(), f"--ckpt_path={self.iclip_ckpt}"]
            + ["--model.init_args.baselines=[kmeans,spectral]"]
            + _world_overrides(self.world),
        )

    def stage1(self) -> None:
        # the pseudo-masks first: stage 2 waits for them, nothing waits for the evaluation
        self.pseudo_masks("pseudo_pp", partial_pixel=PSEUDO_MASKS["pseudo_pp"])
        self.stage1_eval()

    def pseudo_masks(self, name: str, partial_pixel: bool) -> None:
        """Stage 1 on the train split: pseudo-masks into ``runs/<name>/masks``."""
        partial = str(partial_pixel).lower()
        self.stage(
            f"stage 1: pseudo-masks of the train split (partial pixel {partial})",
            self.runs / name,
            ["predict", *self._iclip_args(), "--config", str(CONFIGS / "synthetic/pseudo.yaml")]
            + [f"--ckpt_path={self.iclip_ckpt}", self._classes("model")]
            + [f"--model.init_args.partial_pixel={partial}", self._classes("data")]
            + [f"--data.init_args.root={self.world / 'voc'}"]
            + [f"--data.init_args.pseudo_dir={self.runs / name / 'masks'}"],
            logged=False,
        )

    def _refine(self, name: str, config: str, extra: list[str]) -> None:
        steps = [f"--trainer.max_steps={self.refine_steps}"] if self.refine_steps else []
        common = [self._classes("model"), self._classes("data")]
        common += [f"--data.init_args.root={self.world / 'voc'}", *steps]
        self.stage(
            f"stage 2: {name}",
            self.runs / name,
            ["fit", "--config", str(CONFIGS / config), *common, *extra],
        )
        ckpt = self.runs / name / "logs/version_0/checkpoints/last.ckpt"
        self.stage(
            f"test of {name} (with and without CRF)",
            self.runs / f"{name}_test",
            ["test", "--config", str(CONFIGS / config), *common, *extra, f"--ckpt_path={ckpt}"],
        )

    def stage2(self, variants: tuple[str, ...] = ("refine_pp",)) -> None:
        """Stage 2 on pseudo-masks (the ``variants``, keys of ``STAGE2``) and the oracle."""
        for name in variants:
            pseudo, balance = STAGE2[name]
            partial = PSEUDO_MASKS[pseudo]
            self.pseudo_masks(pseudo, partial_pixel=partial)  # reused when stage 1 made it
            self._refine(
                name,
                "synthetic/refine.yaml",
                [
                    f"--data.init_args.pseudo_dir={self.runs / pseudo / 'masks'}",
                    f"--model.init_args.partial_pixel={str(partial).lower()}",
                    f"--model.init_args.class_balance={str(balance).lower()}",
                ],
            )
        self._refine("oracle", "synthetic/oracle.yaml", [])


# Pseudo-mask runs: name → partial pixel strategy (Eq. 9); stage 2 trains with the same setting.
PSEUDO_MASKS = {"pseudo_pp": True, "pseudo_all": False}
# Stage-2 runs: name → (pseudo-mask run, class-balanced loss). The demo runs ``refine_pp``;
# ``make ablation`` adds the other two (the paper's partial-pixel ablation).
STAGE2 = {
    "refine_pp": ("pseudo_pp", True),
    "refine_all": ("pseudo_all", True),
    "refine_pp_paper": ("pseudo_pp", False),  # Eq. 10 exactly as written
}


def prepare_world(world: Path, generate: bool, timings: dict[str, float]) -> None:
    """Generate the world into ``world`` only when asked; otherwise check it holds the inputs.

    A folder of the user's own data is only read: without ``generate`` nothing is written into
    ``world``, and ``freeseg synth`` itself refuses a non-empty folder it did not write.

    Raises:
        FileNotFoundError: (without ``generate``) ``shards/*.tar``, ``voc/`` or ``classes.txt``
            is missing; the message names each missing path.
    """
    if generate:
        if (world / "world.json").exists():  # synth writes it last: its own completion mark
            print(f"[demo] world: already generated ({world / 'world.json'}), reused")
            return
        print("[demo] world ...", flush=True)
        start = time.perf_counter()
        freeseg(["synth", str(world)])
        timings["world"] = time.perf_counter() - start
        return
    needed = {"classes.txt": (world / "classes.txt").is_file(), "voc/": (world / "voc").is_dir()}
    needed["shards/*.tar"] = any((world / "shards").glob("*.tar"))
    missing = [str(world / name) for name, there in needed.items() if not there]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing: --world needs shards/*.tar, voc/ and classes.txt "
            "(pass --generate to generate a world into an empty folder instead)"
        )
    print(f"[demo] world: {world} (read only)")


def run_demo(
    world: Path,
    runs: Path,
    results: Path,
    refine_steps: int | None = None,
    extra: dict[str, list[str]] | None = None,
    generate: bool = False,
    encoder: Path | None = None,
    recipe: str = "tags",
    jobs: int = 1,
) -> None:
    """The whole chain; ``world`` is only read unless ``generate`` (see :func:`prepare_world`).
    ``encoder``, ``recipe`` and ``jobs`` as for `Demo`."""
    start = time.perf_counter()
    demo = Demo(world, runs, refine_steps, extra, encoder=encoder, recipe=recipe, jobs=jobs)
    prepare_world(world, generate, demo.timings)
    demo.stage0()
    demo.stage1()
    demo.stage2()
    demo.run()
    write_results(results, runs, demo.timings, jobs, time.perf_counter() - start)
    write_grid(results / "grid.png", runs)


def make_encoder(world: Path, runs: Path, out: Path, extra: list[str] | None = None) -> None:
    """``make encoder``: train the stand-in for DINO (stage 0a) and write it to ``out``.

    Beside the weights, ``out`` with suffix ``.json`` records how the file was made: the
    command, the source commit (the data order, and so the file, depends on the code), the
    thread count, its wall time and the attention fit of the exported encoder on the val split.
    """
    timings: dict[str, float] = {}
    prepare_world(world, True, timings)
    run_dir = runs / "encoder"
    args = ["fit", "--config", str(CONFIGS / "synthetic/encoder.yaml")]
    args += [f"--model.init_args.export={run_dir / 'vit.pth'}", *_world_overrides(world)]
    args += [f"--model.init_args.classes={world / 'classes.txt'}"]
    args += _run_dir_args(run_dir) + list(extra or [])
    queue = StageQueue(1, freeseg)  # one stage on every usable core
    queue.submit("stage 0a: pretraining of the stand-in encoder", run_dir, args)
    fit = last_metrics(run_dir)
    seconds = done_seconds(run_dir)
    record = {
        "command": "freeseg " + " ".join(args).replace(f"{CONFIGS.parent}/", ""),
        "seconds": seconds,
        "attention_fit_val": {k: fit[k] for k in ("val/A_mass_fg", "val/A_jaccard") if k in fit},
        "world": json.loads((world / "world.json").read_text()).get("seed"),
        "commit": source_commit(),
        "threads": f"OMP_NUM_THREADS={queue.threads}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (run_dir / "vit.pth").read_bytes())
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    print(f"[demo] encoder: {out} ({seconds:.0f} s), {record['attention_fit_val']}")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=Path, default=Path("data/world"))
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--refine_steps", type=_positive, default=None)
    parser.add_argument(
        "--generate",
        action="store_true",
        help="generate the world into --world first (an empty folder, or one made by synth)",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="Tables 2 and 4: the poolings; partial pixel"
    )
    parser.add_argument(
        "--encoder",
        type=Path,
        default=SHIPPED_ENCODER,
        help="pretrained image-encoder file (default: the shipped stand-in for DINO)",
    )
    parser.add_argument(
        "--train_encoder",
        action="store_true",
        help="train the stand-in on the world's own data first (stage 0a; --encoder_recipe "
        "picks the objective: caption tags, or DINO on the images alone)",
    )
    parser.add_argument(
        "--encoder_recipe",
        choices=sorted(ENCODER_RECIPES),
        default="tags",
        help="with --train_encoder: caption tags (shipped recipe) or DINO on the images alone",
    )
    parser.add_argument(
        "--make_encoder",
        type=Path,
        default=None,
        help="train the stand-in (stage 0a) from its fixed seed and write it to this file",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=default_jobs(),
        help="stages run at once, each as its own process with cores/jobs threads "
        "(default: %(default)s; 1 runs every stage in this process, one after another)",
    )
    args = parser.parse_args()
    if args.make_encoder is not None:
        make_encoder(args.world, args.runs, args.make_encoder)
        return
    encoder = None if args.train_encoder else args.encoder
    start = time.perf_counter()
    if args.ablation:
        from freeseg.ablation import run_ablation  # it builds on Demo, defined here

        try:
            run_ablation(
                args.world, args.runs, args.results, encoder, args.refine_steps, jobs=args.jobs
            )
        except StageFailed as error:
            parser.exit(1, f"demo: {error}\n")
    else:
        try:
            run_demo(
                args.world,
                args.runs,
                args.results,
                args.refine_steps,
                generate=args.generate,
                encoder=encoder,
                recipe=args.encoder_recipe,
                jobs=args.jobs,
            )
        except (FileNotFoundError, FileExistsError) as error:  # the world check: one line
            parser.exit(2, f"demo: {error}\n")
        except StageFailed as error:
            parser.exit(1, f"demo: {error}\n")
    print(f"[demo] total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
