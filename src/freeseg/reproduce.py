"""``make reproduce-voc`` / ``reproduce-coco``: the paper's chain on real data.

stage 0 on GCC3M shards → stage 1 on VOC train_aug (COCO train2017) → stage 2 → test with
dense CRF on VOC val (COCO val2017). Paths come from environment variables (``GCC3M``,
``VOC`` or ``COCO``, ``DINO``); with one missing, nothing runs and the message names it and
the README section that explains how to obtain it. ``DRY_RUN=1`` prints the commands.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from freeseg.shipped import shipped_config

README = "README.md, section 'Real data: reproducing the paper'"
NEEDS = {
    "GCC3M": "GCC3M image-caption shards in img2dataset's webdataset layout (a brace pattern)",
    "DINO": "the DINO ViT-B/8 checkpoint dino_vitbase8_pretrain.pth",
    "VOC": "the PASCAL VOC 2012 directory (VOCdevkit/VOC2012 with SBD train_aug)",
    "COCO": "the COCO-Object root (images/ + annotations_object/ from `freeseg convert-coco`)",
}
DATASETS = {
    "voc": {"root": "VOC", "pseudo": "pseudo_voc", "refine": "refine_voc", "train": "train_aug"},
    "coco": {
        "root": "COCO",
        "pseudo": "pseudo_coco",
        "refine": "refine_coco",
        "train": "train2017",
    },
}


# stage 0 validates zero-shot on the same dataset's val split
STAGE0_VAL = {
    "voc": [],
    "coco": [
        "--data.init_args.segmentation.init_args.dataset=coco_object",
        "--data.init_args.segmentation.init_args.classes=coco_object",
        "--data.init_args.segmentation.init_args.val_split=val2017",
        "--model.init_args.classes=coco_object",
    ],
}


def check_paths(env: dict[str, str], dataset: str) -> list[str]:
    """Messages for each required variable that is unset or points nowhere."""
    from freeseg.lightning_cli import path_missing

    problems = []
    for var in ("GCC3M", "DINO", DATASETS[dataset]["root"]):
        value = env.get(var, "")
        if not value:
            problems.append(f"{var} is not set: {NEEDS[var]} ({README})")
        elif path_missing(value, shards=var == "GCC3M"):
            problems.append(f"{var}={value!r} does not exist: {NEEDS[var]} ({README})")
    return problems


def commands(env: dict[str, str], dataset: str, runs: str = "runs/paper") -> list[list[str]]:
    """The ``freeseg`` command lines of the whole chain, in order."""
    d = DATASETS[dataset]
    root = env.get(d["root"], f"${d['root']}")
    iclip = ["--config", str(shipped_config("iclip_dense.yaml"))]
    stage0 = f"{runs}/iclip"
    ckpt = f"{stage0}/logs/version_0/checkpoints/last.ckpt"
    pseudo_dir = f"{runs}/{d['pseudo']}/masks"
    refine = ["--config", str(shipped_config(f"{d['refine']}.yaml"))]
    refine_ckpt = f"{runs}/{d['refine']}/logs/version_0/checkpoints/last.ckpt"
    data_refine = [
        f"--data.init_args.root={root}",
        f"--data.init_args.pseudo_dir={pseudo_dir}",
    ]
    return [
        ["freeseg", "fit", *iclip]
        + [
            "--model.init_args.model.init_args.image_encoder.init_args.checkpoint="
            + env.get("DINO", "$DINO"),
            f"--data.init_args.image_text.init_args.train_shards={env.get('GCC3M', '$GCC3M')}",
            f"--data.init_args.segmentation.init_args.root={root}",
            *STAGE0_VAL[dataset],
            f"--trainer.default_root_dir={stage0}",
            "--trainer.logger.init_args.version=0",
            f"--trainer.logger.init_args.save_dir={stage0}",
        ],
        ["freeseg", "predict", *iclip, "--config", str(shipped_config(f"{d['pseudo']}.yaml"))]
        + [f"--ckpt_path={ckpt}", f"--data.init_args.root={root}"]
        + [f"--data.init_args.pseudo_dir={pseudo_dir}"],
        ["freeseg", "fit", *refine, *data_refine]
        + [f"--trainer.default_root_dir={runs}/{d['refine']}"]
        + [f"--trainer.logger.init_args.save_dir={runs}/{d['refine']}"]
        + ["--trainer.logger.init_args.version=0"],
        ["freeseg", "test", *refine, *data_refine, f"--ckpt_path={refine_ckpt}"]
        + ["--model.init_args.crf=true", "--trainer.logger=false"],
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dataset = args[0] if args else "voc"
    if dataset not in DATASETS:
        print(f"reproduce: dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        return 2
    env = dict(os.environ)
    dry = env.get("DRY_RUN", "") not in ("", "0")
    chain = commands(env, dataset)
    if dry:
        for command in chain:
            print(shlex.join(command))
        return 0
    problems = check_paths(env, dataset)
    if problems:
        print("reproduce: missing inputs, nothing was run:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    for command in chain:
        print("+", shlex.join(command), flush=True)
        subprocess.run([sys.executable, "-m", "freeseg", *command[1:]], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
