"""provenance.source_commit: the commit make encoder records, read back from git's own files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from freeseg import provenance
from freeseg.provenance import source_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_names_the_checked_out_commit_and_a_dirty_tree(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = (tmp_path / ".git" / "refs" / "heads" / "main").read_text().strip()
    assert len(head) == 40
    assert source_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("not part of the source\n")
    assert source_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two\n")
    assert source_commit(tmp_path) == f"{head}+dirty"


def test_outside_a_checkout_records_nothing(tmp_path: Path) -> None:
    assert source_commit(tmp_path) is None


def test_an_installed_copy_records_nothing_even_inside_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")  # a venv inside some repository
    installed = tmp_path / ".venv/lib/python3.11/site-packages/freeseg/provenance.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("")
    monkeypatch.setattr(provenance, "__file__", str(installed))
    assert source_commit() is None
    checkout = tmp_path / "src" / "freeseg" / "provenance.py"  # a source checkout's layout
    checkout.parent.mkdir(parents=True)
    checkout.write_text("")
    (tmp_path / "a.txt").write_text("one\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "__file__", str(checkout))
    assert source_commit() == (tmp_path / ".git/refs/heads/main").read_text().strip()
