"""A wheel built from the repository works from a fresh environment outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tests.conftest import REPO


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with only the built wheel in it; its dependencies come from this interpreter's
    site-packages through a ``.pth`` line (nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # what the repository holds, without runs, data or caches
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "configs", source / "configs", ignore=ignore)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), "."], source)
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp
        ).strip()
    )
    (site / "shared_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next(tmp.glob("freeseg-*.whl"))
    _run(
        [*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp
    )
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


_PROBE = """
import freeseg
from freeseg.demo import CONFIGS
from freeseg.shipped import list_configs, shipped_config
print(freeseg.__file__)
print(CONFIGS)
print(shipped_config("iclip_dense.yaml"))
print(*list_configs())
"""


@pytest.mark.slow  # ~25 s on 2 cores: a wheel build, a venv, two interpreter start-ups
def test_the_wheel_finds_its_configs_and_runs_print_config(installed, tmp_path):
    out = _run([str(installed / "bin" / "python"), "-c", _PROBE], tmp_path, _env()).splitlines()
    package, demo_configs, config, names = out[0], Path(out[1]), out[2], out[3].split()
    assert str(installed) in package and str(REPO) not in package
    assert str(installed) in str(demo_configs) and (demo_configs / "synthetic/iclip.yaml").is_file()
    assert {"iclip_dense.yaml", "refine_voc.yaml", "synthetic/iclip.yaml"} <= set(names)
    cmd = [str(installed / "bin" / "freeseg"), "fit", "--config", config, "--print_config"]
    printed = _run(cmd, tmp_path, _env())
    assert "freeseg.stages.iclip_module.ICLIPModule" in printed and "kernel_size: 19" in printed


def test_package_data_patterns_cover_every_shipped_config():
    """The fast guard of the wheel test: a config the patterns miss would not be installed."""
    import tomllib

    from freeseg.shipped import config_dir, list_configs

    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["freeseg"]
    package = config_dir().parent
    covered = {p.relative_to(package).as_posix() for pat in patterns for p in package.glob(pat)}
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert {f"configs/{name}" for name in list_configs()} == on_disk
    assert on_disk <= covered
