"""LightningCLI for FreeSeg's trainer subcommands.

Models and data modules are any ``LightningModule`` / ``LightningDataModule`` named by
``class_path``; there is no registry. The configuration actually used is saved beside
the logs of every run. Before anything is built, every configured path to data or weights
is checked, so a missing file stops the run at once with the key that names it. A key that
has moved is refused naming where it lives now.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from freeseg.parsers import OneLineErrors

# key suffix → what it is and where the README explains how to obtain it
PATH_KEYS = {
    "checkpoint": "image encoder weights (README: 'Real data' → DINO ViT-B/8)",
    "encoder_checkpoint": "ImageNet ResNet weights for PSPNet (README: 'Real data')",
    "train_shards": "image-caption shards (README: 'Real data' → GCC3M; or `freeseg synth`)",
    "val_shards": "image-caption shards (README: 'Real data' → GCC3M; or `freeseg synth`)",
    "root": "segmentation set (README: 'Real data' → PASCAL VOC / COCO-Object)",
    "ckpt_path": "a checkpoint written by `freeseg fit`",
}


def path_missing(value: str, shards: bool = False) -> bool:
    """Whether a configured input is absent: a shard pattern matching nothing, or no file."""
    from freeseg.data.shards import expand_shards

    if not shards:
        return not Path(value).exists()
    try:
        expand_shards(value)
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        return False  # there, but not shards: missing_paths reports why
    return False


def _shard_problem(value: str) -> str | None:
    """Why a shard pattern that matches something cannot be read, or None."""
    from freeseg.data.shards import check_shards, expand_shards

    try:
        check_shards(expand_shards(value))
    except FileNotFoundError:
        return None  # reported as missing
    except (IsADirectoryError, ValueError) as error:
        return str(error)
    return None


def missing_paths(config: Any) -> list[str]:
    """Configured paths to data or weights that do not exist, one message each."""
    problems = []
    for key, value in config.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf not in PATH_KEYS or not isinstance(value, str) or value in ("last", "best"):
            continue
        if path_missing(value, shards=leaf.endswith("shards")):
            problems.append(f"  {key}: {value!r} does not exist — {PATH_KEYS[leaf]}")
        elif leaf.endswith("shards") and (problem := _shard_problem(value)):
            problems.append(f"  {key}: {problem}")
    return problems


# (class, key) no longer accepted → where that setting lives now
MOVED_KEYS = {
    ("ICLIPModule", "context_length"): (
        "model.init_args.model.init_args.text_encoder.init_args.context_length"
    ),
    ("ImageTextDataModule", "context_length"): (
        "the model's, whose tokenizer the data module uses: "
        "model.init_args.model.init_args.text_encoder.init_args.context_length (stage 0), "
        "model.init_args.context_length (stage 0a)"
    ),
}
_REFUSED = re.compile(r"class_path '(?:[\w.]+\.)?(\w+)':\s+Option '(\w+)' is not accepted")


def moved_key_hints(message: str) -> list[str]:
    """One line per refused key of ``message`` that :data:`MOVED_KEYS` knows, naming its home."""
    return [
        f"{cls} no longer takes {key!r}; set {MOVED_KEYS[cls, key]}"
        for cls, key in _REFUSED.findall(message)
        if (cls, key) in MOVED_KEYS
    ]


class TrainerParser(OneLineErrors, LightningArgumentParser):
    """LightningCLI's parser, with a parse error as its last line and no usage before it."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error("\n".join([message, *moved_key_hints(message)]), ex)


class FreeSegCLI(LightningCLI):
    """``freeseg fit|validate|test|predict`` (see ``freeseg --help``)."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", TrainerParser)
        kwargs.setdefault("parser_kwargs", {"prog": "freeseg"})
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(args=args, **kwargs)

    def _parse_ckpt_path(self) -> None:
        """Keep the configuration as given when ``--ckpt_path`` is passed.

        Lightning would overwrite the model section with the hyper-parameters stored in the
        checkpoint, silently undoing command-line switches such as thresholds or
        ``mask_at_inference``. Here the configuration defines the model and the checkpoint
        supplies its weights (a mismatch fails loudly when the state dict is loaded).
        """

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        problems = missing_paths(config)
        if problems:
            print(
                "freeseg: missing or unreadable inputs, nothing was started:",
                *problems,
                sep="\n",
                file=sys.stderr,
            )
            raise SystemExit(2)
        self._check_ckpt_stage(config)

    def _check_ckpt_stage(self, config: Any) -> None:
        """A ``--ckpt_path`` of another stage than the configured model: one line, exit 2."""
        ckpt, model = config.get("ckpt_path"), config.get("model")
        class_path = getattr(model, "class_path", None) or (model or {}).get("class_path")
        if not isinstance(ckpt, str) or not Path(ckpt).is_file() or not class_path:
            return
        from freeseg.stages.checkpoints import check_checkpoint_stage

        try:
            check_checkpoint_stage(ckpt, str(class_path).rsplit(".", 1)[-1])
        except ValueError as error:
            print(f"freeseg: {error}; nothing was started", file=sys.stderr)
            raise SystemExit(2) from None

    def instantiate_classes(self) -> None:
        # A constructor's own check (an even kernel, a bad checkpoint) reads best alone.
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError) as error:
            messages, cause = [], error
            while cause is not None:
                messages.append(str(cause).strip())
                cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
            deepest = next((m for m in reversed(messages) if m), str(error))
            print(f"freeseg: invalid configuration: {deepest}", file=sys.stderr)
            raise SystemExit(2) from error
