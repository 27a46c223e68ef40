"""``make ablation``'s Table 2 without training: every row's runs train the row's settings
over the three seeds (as their config files and overrides resolve), and each row reports its
own runs."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import yaml

from freeseg.ablation import pooling_ablation, submit_pooling_runs, submit_stage2_runs
from freeseg.demo import Demo
from freeseg.models.iclip import ICLIP

# Table 2's label → the ICLIP settings (pooling, k, count_include_pad) its runs must train.
ROWS = {
    "masked max (ICLIP)": ("mmp", 1, True),
    "smoothed max": ("smoothed_max", 5, True),
    "smoothed min (SMP)": ("smoothed_min", 5, True),
    "smoothed min (SMP), border windows averaged over in-grid tokens": ("smoothed_min", 5, False),
}
KEYS = ("mAP", "mMIoU", "mIoU_pls")
ROWS_RUNS = ("mmp", "smoothed_max", "smoothed_min", "smoothed_min_in_grid")  # their run names
ICLIP_KEY = "--model.init_args.model.init_args."


def _resolved(args: list[str]) -> tuple[tuple, int]:
    """(pooling, k, count_include_pad) and the seed of a command: its ``--config`` file's
    values, then its overrides in order (the last one wins, as on the command line)."""
    config = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
    values = dict(config["model"]["init_args"]["model"]["init_args"])
    values.setdefault("count_include_pad", True)  # ICLIP's default
    values["seed"] = config["seed_everything"]
    for arg in args:
        key, _, value = arg.partition("=")
        if key.startswith(ICLIP_KEY):
            values[key[len(ICLIP_KEY) :]] = yaml.safe_load(value)
        elif key == "--seed_everything":
            values["seed"] = int(value)
    settings = (values["pooling"], values["kernel_size"], values["count_include_pad"])
    return settings, values["seed"]


def _value(settings: tuple, seed: int, key: str) -> float:
    """The fake metric a run of these settings and seed logs (x 100), distinct for each."""
    row = [*ROWS.values()].index(settings) if settings in ROWS.values() else 50
    return 1 + 10 * row + seed**2 + KEYS.index(key) / 4


class RecordingDemo(Demo):
    """Runs nothing: records each command and, for a validation, logs the fake metrics of the
    settings and seed its checkpoint's training command resolves to."""

    def __init__(self, world: Path, runs: Path, encoder: Path) -> None:
        super().__init__(world, runs, encoder=encoder)
        self.fits: dict[Path, tuple[tuple, int]] = {}
        self.commands: dict[Path, list[str]] = {}
        self.validations: list[tuple[tuple, tuple, int]] = []  # own settings, fit's, seed

    def stage(
        self, name: str, run_dir: Path, args: list[str], logged: bool = True, wide: bool = False
    ) -> None:
        if args[0] == "fit":
            assert run_dir not in self.fits, f"{run_dir} trained twice"
            self.fits[run_dir], self.commands[run_dir] = _resolved(args), args
            return
        ckpt = Path(next(a for a in args if a.startswith("--ckpt_path=")).split("=", 1)[1])
        assert ckpt.parts[-4:] == ("logs", "version_0", "checkpoints", "last.ckpt"), ckpt
        trained, seed = self.fits[ckpt.parents[3]]
        self.validations.append((_resolved(args)[0], trained, seed))
        log = run_dir / "logs/version_0"
        log.mkdir(parents=True)
        header = ",".join(f"val/{key}" for key in KEYS)
        row = ",".join(str(_value(trained, seed, key) / 100) for key in KEYS)
        (log / "metrics.csv").write_text(f"epoch,step,{header}\n0,10,{row}\n")


def test_table2_trains_each_row_over_three_seeds_and_reports_its_own_runs(tmp_path: Path):
    encoder = tmp_path / "vit.pth"
    encoder.write_bytes(b"")  # only its existence is checked; nothing is loaded
    demo = RecordingDemo(tmp_path / "world", tmp_path / "runs", encoder)
    table = pooling_ablation(demo, tmp_path / "runs")
    # every row trained with each seed exactly once; the demo's stage 0 (SMP, seed 0) is reused
    trained = sorted(demo.fits.values())
    assert trained == sorted((s, seed) for s in ROWS.values() for seed in (0, 1, 2))
    # every overridden ICLIP key is one of its arguments, which the CLI builds its keys from
    overridden = {
        arg[len(ICLIP_KEY) :].partition("=")[0]
        for args in demo.commands.values()
        for arg in args
        if arg.startswith(ICLIP_KEY)
    }
    overridden = {key for key in overridden if "." not in key}  # not the encoders' own keys
    assert "count_include_pad" in overridden
    assert overridden <= set(inspect.signature(ICLIP).parameters), overridden
    # each validation evaluates with the settings its checkpoint was trained with
    assert len(demo.validations) == 12  # 11 ablation runs + the demo's stage-1 evaluation
    assert all(own == trained for own, trained, _ in demo.validations)
    cells = {}
    for line in table.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 7 and parts[1] in ROWS:
            cells[parts[1]] = (int(parts[2]), parts[3:6])
    assert set(cells) == set(ROWS), table
    for label, settings in ROWS.items():
        expected = []
        for key in KEYS:
            values = [_value(settings, seed, key) for seed in (0, 1, 2)]
            expected.append(f"{np.mean(values):.1f} ± {max(values) - min(values):.1f}")
        assert cells[label] == (settings[1], expected), label


def _graph(demo: Demo) -> dict[str, set[str]]:
    """Each queued stage's run directory name → the names of the stages it waits for."""
    return {s.run_dir.name: {n.name for n in s.needs} for s in demo.queue._queued}


def test_the_demo_and_ablation_stages_wait_for_what_they_read(tmp_path: Path):
    """With ``jobs`` > 1 nothing runs until ``run()``; the stage graph is the chain's data flow,
    written out here by hand."""
    encoder = tmp_path / "vit.pth"
    encoder.write_bytes(b"")
    demo = Demo(tmp_path / "world", tmp_path / "runs", 4, encoder=encoder, jobs=2)
    demo.stage0(), demo.stage1(), demo.stage2()
    assert _graph(demo) == {
        "iclip": set(),  # the shipped encoder is a file, not a stage
        "pseudo_pp": {"iclip"},
        "stage1_eval": {"iclip"},
        "refine_pp": {"pseudo_pp"},
        "refine_pp_test": {"refine_pp", "pseudo_pp"},  # its command names both
        "oracle": set(),  # the ground-truth masks only: it runs beside stage 0
        "oracle_test": {"oracle"},
    }
    assert not (tmp_path / "runs").exists()  # queued, not run
    # stage 0, which everything after it waits for, runs alone with every core
    assert {s.run_dir.name for s in demo.queue._queued if s.wide} == {"iclip"}
    # trained on the world first, stage 0 waits for the encoder
    demo = Demo(tmp_path / "world", tmp_path / "runs", 4, jobs=2)
    demo.stage0()
    assert _graph(demo) == {"encoder": set(), "iclip": {"encoder"}}
    # the ablation: every Table-2 evaluation waits for its own stage 0 only; Table 4's runs
    # share the demo's stage 1; a stage both tables need is queued once
    demo = Demo(tmp_path / "world", tmp_path / "runs", 4, encoder=encoder, jobs=2)
    submit_pooling_runs(demo, tmp_path / "runs")
    submit_stage2_runs(demo)
    graph = _graph(demo)
    assert len(graph) == len(demo.queue._queued)  # no run directory twice
    for name in ROWS_RUNS:
        for seed in (0, 1, 2):
            run = f"ablation_{name}_seed{seed}"
            if (name, seed) == ("smoothed_min", 0):
                assert run not in graph  # the demo's own stage 0
                continue
            assert graph[run] == set() and graph[f"{run}_eval"] == {run}
    assert graph["pseudo_all"] == {"iclip"}
    assert graph["refine_all"] == {"pseudo_all"}
    assert graph["refine_pp_paper"] == {"pseudo_pp"}
    assert graph["refine_pp_paper_test"] == {"refine_pp_paper", "pseudo_pp"}
