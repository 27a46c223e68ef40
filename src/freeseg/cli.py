"""The ``freeseg`` command line.

Trainer subcommands (``fit``, ``validate``, ``test``, ``predict``) are Lightning's own
``LightningCLI``: the model and the data module are chosen by ``class_path`` in YAML, and
``--print_config`` prints the resolved configuration. Tool subcommands (``synth``,
``segment``, ``convert-coco``) wrap typed functions with jsonargparse, so every option of
every subcommand is checked against its annotation before any work starts.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

TRAINER_COMMANDS = {
    "fit": "train a stage (0: ICLIP pretraining, 2: PSPNet refinement)",
    "validate": "evaluate a checkpoint on a validation set (mAP, mMIoU, mIoU)",
    "test": "evaluate a checkpoint on a test set",
    "predict": "write stage-1 pseudo-masks (ITSM → Partial Label Strategy)",
}

# name → (module, function, one-line help); imported lazily so `freeseg --help` is fast.
TOOL_COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": (
        "freeseg.synth",
        "generate_world",
        "generate the image-caption world (webdataset shards + VOC-layout set)",
    ),
    "convert-coco": (
        "freeseg.data.coco_object",
        "convert_coco_stuff_to_object",
        "convert COCO-Stuff-164k label PNGs to COCO-Object (81 classes)",
    ),
    "bench": (
        "freeseg.bench",
        "bench",
        "time the stage-1 mask against the bare encoder forward, K-means and a stage-0 step",
    ),
    "configs": (
        "freeseg.shipped",
        "print_configs",
        "print the paths of the shipped configs (for --config)",
    ),
    "segment": (
        "freeseg.segment",
        "segment_images",
        "segment your own images with a checkpoint and a list of class names",
    ),
}


def _usage() -> str:
    lines = [
        "usage: freeseg <command> [options]   (freeseg <command> --help for its options)",
        "",
        "FreeSeg: open-vocabulary semantic segmentation learned from image-caption pairs.",
        "",
        "trainer commands (LightningCLI; --config FILE.yaml, --print_config):",
    ]
    lines += [f"  {name:<13} {text}" for name, text in TRAINER_COMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {name:<13} {text}" for name, (_, _, text) in TOOL_COMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  freeseg synth data/world",
        "  freeseg fit --config configs/synthetic/iclip.yaml",
        "  freeseg fit --config configs/iclip_dense.yaml --print_config",
    ]
    return "\n".join(lines)


def _run_tool(name: str, args: Sequence[str]) -> Any:
    from jsonargparse import CLI

    from freeseg.parsers import ToolParser

    module_name, func_name, _ = TOOL_COMMANDS[name]
    module = importlib.import_module(module_name)
    func: Callable[..., Any] = getattr(module, func_name)
    # A tool may rewrite its command line (``segment IMAGE... --ckpt X``) and then takes every
    # argument as an option; the others take required arguments positionally.
    rewrite: Callable[[list[str]], list[str]] | None = getattr(module, "cli_args", None)
    options = {"prog": f"freeseg {name}", "parser_class": ToolParser}
    try:
        if rewrite is not None:
            return CLI(func, args=rewrite(list(args)), as_positional=False, **options)
        return CLI(func, args=list(args), **options)
    except (ValueError, OSError) as error:  # the tool's own check of its inputs: one line
        print(f"freeseg {name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_trainer(args: Sequence[str] | None) -> None:
    from freeseg.lightning_cli import FreeSegCLI

    FreeSegCLI(args=None if args is None else list(args))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``freeseg`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    if args[0] in TOOL_COMMANDS:
        result = _run_tool(args[0], args[1:])
        if isinstance(result, dict):
            for key, value in result.items():
                print(f"{key}: {value}")
        return
    if args[0] in TRAINER_COMMANDS or args[0].startswith("-"):
        # the process's own command line is read by LightningCLI itself (as with argv None)
        _run_trainer(None if argv is None or args == sys.argv[1:] else args)
        return
    print(f"freeseg: unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
