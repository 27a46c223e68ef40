"""Run the demo's ``freeseg`` commands, several at a time when the machine has the cores.

A stage is one ``freeseg`` command writing into its own run directory, and ``done.json`` in
that directory marks it finished: a finished stage is never run again. With ``jobs=1`` each
stage runs in this process as soon as it is submitted. With ``jobs > 1`` stages are queued
and :meth:`StageQueue.run` starts each one as its own process once every stage it reads from
has finished: a command waits for every earlier command whose run directory one of its
arguments points into (a checkpoint, a pseudo-mask folder, an encoder file). Each process
gets ``cores // jobs`` threads and writes its output to ``output.log`` in its run directory.

A *wide* stage (one the rest of the chain waits for, such as stage 0) runs alone with every
core: it starts when nothing runs, and nothing starts beside it.

Where the platform has ``forkserver`` and a ``preload`` list is given, each stage is forked
from one server process that imported those modules once, and runs the in-process entry
point there: importing torch, Lightning and their dependencies takes about 12 s of CPU, paid
once per chain instead of once per stage. The forked stage is made to look like a fresh
``python -m freeseg`` to what it starts (its ``__main__``, ``sys.argv``, the start method of
its workers, its thread settings); its results are bit-identical to the subprocess's.
Otherwise each stage is a fresh ``python -m freeseg`` subprocess.

Measured on 2 cores: stage 2's small convolutions do not gain from a second thread, so two
stage-2 trainings side by side take about the time of one; stage 0 gains about 1.3x from the
second thread, and side by side with another training it slows by about 1.9x.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from freeseg.data.atomic import atomic_write_text

DONE = "done.json"
LOG = "output.log"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """Stages run at once by default: two when there are two cores or more."""
    return min(2, usable_cores())


class StageFailed(RuntimeError):
    """A stage's command exited with an error; the message names the stage and its log."""


def mark_done(run_dir: Path, seconds: float) -> None:
    atomic_write_text(run_dir / DONE, json.dumps({"seconds": round(seconds, 1)}))


def done_seconds(run_dir: Path) -> float | None:
    """The recorded wall time of a finished stage, or None when it has not finished."""
    done = run_dir / DONE
    return float(json.loads(done.read_text())["seconds"]) if done.exists() else None


def _points_into(args: Sequence[str], run_dir: Path) -> bool:
    """Whether an argument (``--key=PATH`` or ``PATH``) names ``run_dir`` or a path inside it."""
    parts = run_dir.parts
    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if Path(value).parts[: len(parts)] == parts:
            return True
    return False


@dataclass
class _Stage:
    name: str
    run_dir: Path
    args: list[str]
    needs: list[Path]  # run directories of earlier stages this one reads
    wide: bool = False  # runs alone, with every core


class _Process(Protocol):
    """What the queue needs of a running stage (a subprocess or a forked process)."""

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def wait(self) -> object: ...


class _Forked:
    """A stage forked from the preloaded server, with the `subprocess.Popen` calls we use."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process

    def poll(self) -> int | None:
        return self.process.exitcode

    def terminate(self) -> None:
        self.process.terminate()

    def wait(self) -> None:
        self.process.join()


def _limit_threads(count: int) -> None:
    """Set this process's thread pools (torch, OpenMP, BLAS) and its children's to ``count``."""
    for key in THREAD_VARIABLES:
        os.environ[key] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # only BLAS libraries loaded after this point read the variables
        return
    threadpool_limits(count)


def _act_as_python_m_freeseg(args: list[str]) -> None:
    """Make ``sys.argv`` and ``__main__`` what ``python -m freeseg ARGS`` would have.

    The forked stage inherits the queue's own ``__main__`` (``freeseg.demo``, say). Every
    process the stage starts with ``spawn`` or ``forkserver`` (the CRF workers) would import
    that module again, from nothing, at its start; ``freeseg.__main__`` is never re-imported
    there. Lightning's DDP launcher re-runs ``python -m freeseg.__main__`` with ``sys.argv``.
    """
    spec = importlib.util.find_spec("freeseg.__main__")  # found, not run
    assert spec is not None and spec.origin is not None
    main = types.ModuleType("__main__")
    main.__spec__, main.__file__ = spec, spec.origin
    sys.modules["__main__"] = main
    sys.argv = [spec.origin, *args]


def _run_forked(
    run: Callable[[list[str]], object],
    args: list[str],
    log_path: str,
    threads: int,
    start_method: str,
) -> None:
    """A forked stage: its output into ``log_path``, ``threads`` threads, then ``run(args)``.

    ``start_method`` is the queue's own default, which the stage's data loader workers use as
    they would in a fresh process (a process started by ``forkserver`` would otherwise start
    its own with ``forkserver`` too, each worker importing everything from nothing, at every
    epoch). An exception is printed into the log and exits 1; ``SystemExit`` keeps its code."""
    multiprocessing.set_start_method(start_method, force=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    os.environ["PYTHONUNBUFFERED"] = "1"
    _limit_threads(threads)
    _act_as_python_m_freeseg(args)
    try:
        run(args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _fork_context(preload: Sequence[str]) -> multiprocessing.context.ForkServerContext | None:
    """The ``forkserver`` context, its server started now to import ``preload`` meanwhile;
    None where the platform has no ``forkserver``. The server is this process's one
    ``forkserver``: a server already running keeps its own preload list."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    from multiprocessing import forkserver  # only where the platform has it

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    saved = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    os.environ.update({key: "1" for key in THREAD_VARIABLES})  # no thread pools to fork
    try:
        forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return context


@dataclass
class _Running:
    stage: _Stage
    process: _Process
    log: IO[str]
    started: float


class StageQueue:
    """Stages of one chain, run in process (``jobs=1``) or ``jobs`` at a time as subprocesses.

    Args:
        jobs: stages run at once; 1 runs each stage in this process when it is submitted.
        run_inline: how a stage runs in this process (``freeseg``'s ``main``, given the
            argument list); used when ``jobs`` is 1.
        command: the subprocess's command line for a stage's arguments (default
            ``python -m freeseg ARGS``).
        prefix: printed before every progress line.
        preload: modules a server process imports once; with ``jobs`` > 1, no ``command`` and
            a platform with ``forkserver``, each stage is forked from it and runs
            ``run_inline(args)`` there (``run_inline`` must then be a module-level function).
    """

    def __init__(
        self,
        jobs: int,
        run_inline: Callable[[list[str]], object],
        command: Callable[[list[str]], list[str]] | None = None,
        prefix: str = "[demo]",
        preload: Sequence[str] | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be ≥ 1, got {jobs}")
        self.jobs, self.run_inline, self.prefix = jobs, run_inline, prefix
        forked = jobs > 1 and command is None and preload is not None
        self._fork = _fork_context(preload or ()) if forked else None
        self.command = command or (lambda args: [sys.executable, "-m", "freeseg", *args])
        self.threads = max(1, usable_cores() // jobs)
        self.timings: dict[str, float] = {}
        self._queued: list[_Stage] = []
        self._submitted: list[Path] = []

    def submit(self, name: str, run_dir: Path, args: list[str], wide: bool = False) -> None:
        """Run (``jobs=1``) or queue the command ``args`` into ``run_dir`` unless it finished
        (or is queued already: a stage several chains share runs once). ``wide``: the stage
        runs alone with every core (for one that the stages after it wait for)."""
        if run_dir in self._submitted:
            return
        seconds = done_seconds(run_dir)
        if seconds is not None:
            print(f"{self.prefix} {name}: already done ({run_dir / DONE}), reused")
            self.timings.setdefault(name, seconds)
            return
        if self.jobs == 1:
            print(f"{self.prefix} {name} ...", flush=True)
            start = time.perf_counter()
            self.run_inline(args)
            self._finish(name, run_dir, time.perf_counter() - start)
            return
        own = run_dir.parts
        needs = [
            earlier
            for earlier in self._submitted
            if earlier.parts != own and _points_into(args, earlier)
        ]
        self._queued.append(_Stage(name, run_dir, list(args), needs, wide))
        self._submitted.append(run_dir)

    def _finish(self, name: str, run_dir: Path, seconds: float) -> None:
        self.timings[name] = seconds
        mark_done(run_dir, seconds)

    def _ready(self, stage: _Stage) -> bool:
        return all(done_seconds(need) is not None for need in stage.needs)

    def _start(self, stage: _Stage) -> _Running:
        stage.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = stage.run_dir / LOG
        log = log_path.open("a")
        log.write(f"$ freeseg {' '.join(stage.args)}\n")
        log.flush()
        count = usable_cores() if stage.wide else self.threads
        threads = f"{count} thread{'s' if count > 1 else ''}"
        print(f"{self.prefix} {stage.name} ... ({threads}, log {log_path})", flush=True)
        process: _Process
        if self._fork is not None:
            child = self._fork.Process(
                target=_run_forked,
                args=(
                    self.run_inline,
                    list(stage.args),
                    str(log_path),
                    count,
                    multiprocessing.get_start_method(),
                ),
                name=stage.name,
            )
            child.start()
            process = _Forked(child)
        else:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.update({key: str(count) for key in THREAD_VARIABLES})
            process = subprocess.Popen(
                self.command(stage.args), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return _Running(stage, process, log, time.perf_counter())

    def run(self) -> None:
        """Run every queued stage, at most ``jobs`` at once (a wide one alone), each after the
        stages it reads.

        Raises:
            StageFailed: a stage exited with an error. Stages already running are let finish
                (their work is kept), stages not started are not started; the message names
                the failed stage and its ``output.log``, whose last lines are printed.
        """
        running: list[_Running] = []
        failed: list[_Stage] = []
        try:
            while self._queued or running:
                if not failed:
                    for stage in [s for s in self._queued if self._ready(s)]:
                        alone = stage.wide or any(r.stage.wide for r in running)
                        if len(running) == self.jobs or (running and alone):
                            break  # a wide stage waits for the running ones; none overtakes it
                        self._queued.remove(stage)
                        running.append(self._start(stage))
                if not running:  # nothing can start: a stage it needs failed
                    break
                time.sleep(0.2)
                ended = [(r, code) for r in running if (code := r.process.poll()) is not None]
                for job, code in ended:
                    running.remove(job)
                    job.log.close()
                    if code == 0:
                        seconds = time.perf_counter() - job.started
                        self._finish(job.stage.name, job.stage.run_dir, seconds)
                        print(
                            f"{self.prefix} {job.stage.name}: done in {seconds:.0f} s", flush=True
                        )
                    else:
                        failed.append(job.stage)
                        self._report_failure(job.stage, code)
        finally:
            for job in running:  # interrupted: stop the children; none is marked done
                job.process.terminate()
                job.process.wait()
                job.log.close()
        if failed:
            self._queued.clear()
            names = ", ".join(f"{s.name} (log {s.run_dir / LOG})" for s in failed)
            raise StageFailed(f"failed: {names}")
        if self._queued:  # a stage it reads lost its done.json while the queue ran
            names = ", ".join(s.name for s in self._queued)
            self._queued.clear()
            raise StageFailed(f"could not start (a stage they read is not done): {names}")

    def _report_failure(self, stage: _Stage, code: int) -> None:
        log = stage.run_dir / LOG
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print(f"{self.prefix} {stage.name} FAILED (exit {code}); last lines of {log}:")
        print("\n".join("    " + line for line in tail), flush=True)
