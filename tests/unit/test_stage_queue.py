"""The demo's stage queue: each stage waits for the stages it reads, at most ``jobs`` run at
once, a failure stops what depends on it and keeps what finished, and finished stages are
reused. Stages are small Python scripts that record when they ran."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from freeseg.stage_queue import StageFailed, StageQueue, _points_into, usable_cores

# A fake stage: argv = [run_dir, seconds, exit code, paths it reads...]; it checks that what
# it reads exists, sleeps, and records its start and end times and its thread setting.
SCRIPT = """
import json, os, sys, time
run_dir, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
missing = [p for p in sys.argv[4:] if not os.path.exists(p)]
start = time.time()
time.sleep(seconds)
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "ran.json"), "w") as f:
    json.dump({"start": start, "end": time.time(), "missing": missing,
               "threads": os.environ.get("OMP_NUM_THREADS")}, f)
if code == 0:
    open(os.path.join(run_dir, "out.txt"), "w").write("made")
sys.exit(code)
"""


def _queue(jobs: int) -> StageQueue:
    def inline(args: list[str]) -> None:
        raise AssertionError("jobs > 1 must not run a stage in process")

    return StageQueue(jobs, inline, command=lambda args: [sys.executable, "-c", SCRIPT, *args])


def _submit(
    queue: StageQueue, run_dir: Path, seconds: float = 0.3, code: int = 0, reads=(), wide=False
) -> None:
    args = [str(run_dir), str(seconds), str(code), *(str(p) for p in reads)]
    queue.submit(run_dir.name, run_dir, args, wide=wide)


def _ran(run_dir: Path) -> dict:
    return json.loads((run_dir / "ran.json").read_text())


def test_a_stage_waits_for_the_stages_it_reads_and_two_run_at_once(tmp_path: Path):
    a, b, c, d = (tmp_path / name for name in ("a", "b", "c", "d"))
    queue = _queue(jobs=2)
    _submit(queue, a, seconds=0.8)
    _submit(queue, b, reads=[a / "out.txt"])  # b reads a's output
    _submit(queue, c, seconds=0.8)  # c reads nothing: it runs beside a
    _submit(queue, d, reads=[b / "out.txt", c / "out.txt"])
    queue.run()
    ran = {p.name: _ran(p) for p in (a, b, c, d)}
    assert all(not r["missing"] for r in ran.values()), ran  # every input was there
    assert ran["b"]["start"] >= ran["a"]["end"]
    assert ran["d"]["start"] >= max(ran["b"]["end"], ran["c"]["end"])
    assert ran["c"]["start"] < ran["a"]["end"]  # side by side
    # never more than two at once: at every start, count the stages running
    for name, r in ran.items():
        running = [o for o in ran.values() if o["start"] <= r["start"] < o["end"]]
        assert len(running) <= 2, name
    threads = str(max(1, usable_cores() // 2))
    assert {r["threads"] for r in ran.values()} == {threads}
    for p in (a, b, c, d):  # each marked done, with its output logged beside it
        assert json.loads((p / "done.json").read_text())["seconds"] > 0
        assert (p / "output.log").read_text().startswith("$ freeseg ")
    assert set(queue.timings) == {"a", "b", "c", "d"}


def test_no_more_stages_run_at_once_than_jobs(tmp_path: Path):
    dirs = [tmp_path / f"s{i}" for i in range(3)]
    queue = _queue(jobs=2)
    for run_dir in dirs:
        _submit(queue, run_dir, seconds=0.6)
    queue.run()
    ran = sorted((_ran(p) for p in dirs), key=lambda r: r["start"])
    assert ran[1]["start"] < ran[0]["end"]  # two side by side
    assert ran[2]["start"] >= min(ran[0]["end"], ran[1]["end"])  # the third waits for one


def test_a_wide_stage_runs_alone_with_every_core_and_is_not_overtaken(tmp_path: Path):
    first, wide, after = tmp_path / "first", tmp_path / "wide", tmp_path / "after"
    queue = _queue(jobs=2)
    _submit(queue, first, seconds=0.6)
    _submit(queue, wide, seconds=0.6, wide=True)  # reads nothing, but waits for `first`
    _submit(queue, after, seconds=0.3)  # reads nothing, but does not overtake `wide`
    queue.run()
    ran = {p.name: _ran(p) for p in (first, wide, after)}
    assert ran["wide"]["start"] >= ran["first"]["end"]
    assert ran["after"]["start"] >= ran["wide"]["end"]
    assert ran["wide"]["threads"] == str(usable_cores())
    assert ran["after"]["threads"] == str(max(1, usable_cores() // 2))


def test_one_job_runs_each_stage_in_process_when_submitted(tmp_path: Path):
    order: list[str] = []
    queue = StageQueue(1, lambda args: order.append(args[0]))
    queue.submit("first", tmp_path / "first", ["first"])
    assert order == ["first"] and (tmp_path / "first/done.json").exists()
    queue.submit("second", tmp_path / "second", ["second"])
    queue.run()  # nothing queued
    assert order == ["first", "second"]


def test_a_failure_stops_its_dependants_keeps_the_rest_and_a_rerun_resumes(tmp_path: Path, capsys):
    a, b, c, d = (tmp_path / name for name in ("a", "b", "c", "d"))
    queue = _queue(jobs=2)
    _submit(queue, a, seconds=0.1, code=3)
    _submit(queue, b, seconds=0.8)  # independent and running when a fails
    _submit(queue, c, reads=[a / "out.txt"])  # needs a: never started
    _submit(queue, d, reads=[b / "out.txt"])  # needs b only, but nothing new starts
    with pytest.raises(StageFailed, match=r"failed: a \(log .*a/output.log\)"):
        queue.run()
    out = capsys.readouterr().out
    assert "a FAILED (exit 3)" in out
    assert not (a / "done.json").exists() and (a / "ran.json").exists()
    assert (b / "done.json").exists()  # let finish, and kept
    assert not c.exists() and not d.exists()
    # a rerun reuses b and runs the rest
    b_ran = _ran(b)
    queue = _queue(jobs=2)
    _submit(queue, a, seconds=0.1)
    _submit(queue, b, seconds=0.8)
    _submit(queue, c, reads=[a / "out.txt"])
    _submit(queue, d, reads=[b / "out.txt"])
    queue.run()
    assert _ran(b) == b_ran  # not run again
    assert "b: already done" in capsys.readouterr().out
    for p in (a, c, d):
        assert (p / "done.json").exists() and not _ran(p)["missing"]
    assert (a / "output.log").read_text().count("$ freeseg ") == 2  # both attempts logged


def test_a_stage_submitted_twice_is_queued_once(tmp_path: Path):
    queue = _queue(jobs=2)
    for _ in range(2):
        _submit(queue, tmp_path / "a")
    queue.run()
    assert (tmp_path / "a/output.log").read_text().count("$ freeseg ") == 1


@pytest.mark.parametrize(
    ("args", "run_dir", "expected"),
    [
        (["--ckpt_path=runs/refine_pp/logs/last.ckpt"], "runs/refine_pp", True),
        (["--ckpt_path=runs/refine_pp/logs/last.ckpt"], "runs/refine_pp_test", False),
        (["--trainer.default_root_dir=runs/refine_pp_test"], "runs/refine_pp", False),
        (["--data.init_args.pseudo_dir=runs/pseudo_pp/masks"], "runs/pseudo_pp", True),
        (["--x=runs/pseudo_pp"], "runs/pseudo_pp", True),
        (["runs/encoder/vit.pth"], "runs/encoder", True),
        (["--x=runs/encoder_dino/vit.pth", "fit"], "runs/encoder", False),
        (["--x=/abs/runs/a/b"], "runs/a", False),
    ],
)
def test_which_arguments_point_into_a_run_directory(args, run_dir, expected):
    assert _points_into(args, Path(run_dir)) is expected


def test_jobs_must_be_positive():
    with pytest.raises(ValueError, match="jobs must be ≥ 1, got 0"):
        StageQueue(0, print)


def test_a_stage_whose_input_never_finishes_is_an_error_not_a_silent_stop(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    queue = _queue(jobs=2)
    _submit(queue, a)
    _submit(queue, b, reads=[a / "out.txt"])
    queue._queued.pop(0)  # `a` is lost from the queue: `b` can never start
    with pytest.raises(StageFailed, match=r"could not start .*: b$"):
        queue.run()
    assert not b.exists()


# Forked stages: a fresh interpreter (so that its forkserver is new) runs `driver.py`, which
# queues four stages whose entry point lives in `fakestage`. `heavy` stands for torch and
# Lightning; it and the driver record every process that imports them. Stage b starts a
# `spawn` worker, as stage 2 starts its CRF workers.
HEAVY = """
import os
with open(os.environ["IMPORT_LOG"], "a") as f:
    f.write(f"heavy {os.getpid()}\\n")
"""
FAKE_STAGE = """
import json, multiprocessing, os, sys
def worker():
    pass
def run(args):
    run_dir, code = args[0], int(args[1])
    os.makedirs(run_dir, exist_ok=True)
    record = {"pid": os.getpid(), "heavy": "heavy" in sys.modules, "args": args,
              "argv": sys.argv[1:], "threads": os.environ.get("OMP_NUM_THREADS"),
              "start_method": multiprocessing.get_start_method()}
    if run_dir.endswith("b"):
        spawned = multiprocessing.get_context("spawn").Process(target=worker)
        spawned.start()
        spawned.join()
        record["worker"] = spawned.pid
    with open(os.path.join(run_dir, "ran.json"), "w") as f:
        json.dump(record, f)
    print("stage output", run_dir)
    if code == 9:
        raise RuntimeError("a bug in the stage")
    if code:
        sys.exit(code)
"""
DRIVER = """
import json, os, sys
from pathlib import Path
with open(os.environ["IMPORT_LOG"], "a") as f:
    f.write(f"driver {os.getpid()}\\n")
if __name__ == "__main__":
    import fakestage
    from freeseg.stage_queue import StageFailed, StageQueue
    root = Path(sys.argv[1])
    # two queues of this process: the second finds the server running
    for stages in ((("a", 0, True), ("b", 0, False)), (("c", 3, False), ("d", 9, False))):
        queue = StageQueue(2, fakestage.run, preload=["heavy"])
        for name, code, wide in stages:
            queue.submit(name, root / name, [str(root / name), str(code)], wide=wide)
        try:
            queue.run()
        except StageFailed as error:
            print("FAILED", error)
    import multiprocessing
    print(json.dumps({"heavy": "heavy" in sys.modules,
                      "start_method": multiprocessing.get_start_method()}))
"""


def test_forked_stages_share_one_preload_and_keep_logs_threads_and_exit_codes(tmp_path: Path):
    import os
    import subprocess

    for name, text in (("heavy", HEAVY), ("fakestage", FAKE_STAGE), ("driver", DRIVER)):
        (tmp_path / f"{name}.py").write_text(text)
    imports, root = tmp_path / "imports.log", tmp_path / "runs"
    env = dict(os.environ, IMPORT_LOG=str(imports), PYTHONPATH=f"{tmp_path}{os.pathsep}src")
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    ran = {name: _ran(root / name) for name in "abcd"}
    stages = {str(r["pid"]) for r in ran.values()}
    assert len(stages) == 4
    importers = [line.split() for line in imports.read_text().splitlines()]
    # `heavy` was imported once, by a process that is none of the stages nor the driver
    heavy = [pid for what, pid in importers if what == "heavy"]
    assert len(heavy) == 1 and heavy[0] not in stages
    assert all(r["heavy"] for r in ran.values())
    driver_end = json.loads(out.splitlines()[-1])
    assert driver_end["heavy"] is False
    # a stage's own workers start as in a fresh process (not by a forkserver of their own)
    assert {r["start_method"] for r in ran.values()} == {driver_end["start_method"]}
    # the process a stage spawns does not import the driver's main module again
    driver = {pid for what, pid in importers if what == "driver"}
    assert str(ran["b"]["worker"]) not in driver
    # the in-process entry point got the stage's arguments, as `python -m freeseg` would
    assert ran["b"]["args"] == ran["b"]["argv"] == [str(root / "b"), "0"]
    assert ran["a"]["threads"] == str(usable_cores())
    assert ran["b"]["threads"] == str(max(1, usable_cores() // 2))
    # output and tracebacks go to the stage's own log; exit codes reach the queue
    log = (root / "b/output.log").read_text()
    assert log.startswith("$ freeseg ") and f"stage output {root / 'b'}" in log
    assert "RuntimeError: a bug in the stage" in (root / "d/output.log").read_text()
    assert "c FAILED (exit 3)" in out and "d FAILED (exit 1)" in out
    assert (root / "a/done.json").exists() and (root / "b/done.json").exists()
    assert not (root / "c/done.json").exists() and not (root / "d/done.json").exists()
