"""The demo's world handling: a folder of the user's own data is only ever read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.user_folder import make_user_folder, snapshot

from freeseg.demo import prepare_world


def test_own_data_folder_is_read_only(tmp_path: Path, capsys):
    world = tmp_path / "mine"
    make_user_folder(world, pairs=4, train=2, val=2)
    before = snapshot(world)
    prepare_world(world, generate=False, timings={})
    with pytest.raises(SystemExit) as exit_info:  # `freeseg synth` refuses, in one line
        prepare_world(world, generate=True, timings={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"freeseg synth: {world} is not empty and was not written by `freeseg synth` "
        "(no world.json or .world_params.json); refusing to write into it: give an empty or "
        "new folder"
    )
    assert snapshot(world) == before


def test_missing_inputs_are_named_and_nothing_is_generated(tmp_path: Path):
    world = tmp_path / "half"
    (world / "voc").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        prepare_world(world, generate=False, timings={})
    assert str(world / "classes.txt") in str(err.value)
    assert str(world / "shards/*.tar") in str(err.value)
    assert str(world / "voc/") not in str(err.value)
    assert sorted(p.name for p in world.iterdir()) == ["voc"]


def test_generating_keeps_synths_world_json_and_a_rerun_reuses_it(tmp_path: Path, monkeypatch):
    """world.json is synth's record of the world (and its completion mark): the demo must not
    write over it, and a second run must not generate again."""
    import freeseg.demo as demo
    from freeseg.synth import generate_world

    calls: list[list[str]] = []

    def small_synth(args: list[str]) -> None:
        calls.append(args)
        generate_world(args[1], num_pairs=8, shard_size=8, num_train=2, num_val=2, workers=1)

    monkeypatch.setattr(demo, "freeseg", small_synth)
    world, timings = tmp_path / "world", {}
    prepare_world(world, generate=True, timings=timings)
    record = json.loads((world / "world.json").read_text())
    assert record["generator"] == "freeseg.synth" and record["num_pairs"] == 8
    assert timings["world"] > 0
    prepare_world(world, generate=True, timings={})
    assert len(calls) == 1
