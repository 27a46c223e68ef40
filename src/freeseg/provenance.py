"""Where a made file came from: the source commit recorded beside ``make encoder``'s weights."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str:
    """``git -C root ARGS``'s standard output, stripped; raises if git fails or is missing."""
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def source_commit(root: Path | None = None) -> str | None:
    """The git commit of the source tree at ``root``, ``+dirty`` if it has uncommitted changes.

    ``root`` defaults to the checkout this package runs from. None outside a git checkout, for
    an installed (non-editable) copy of the package, or without git: the record then says
    nothing rather than something wrong.
    """
    if root is None:
        here = Path(__file__).resolve()
        root = here.parents[2]
        if here.parents[1] != root / "src":  # site-packages/freeseg, maybe inside some repo
            return None
    try:
        head = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if status else head or None
