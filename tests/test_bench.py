"""`freeseg bench` on a tiny encoder: every row printed, ratios consistent with the times."""

from __future__ import annotations

import re

from freeseg.cli import main

ROWS = ("encoder", "stage-1 mask", "encoder + K-means", "stage-0 step")


def _close(printed: float, value: float, decimals: int) -> bool:
    """``printed`` is ``value`` up to its own rounding and that of 4-significant-digit times."""
    return abs(printed - value) <= 0.5 * 10**-decimals + 2e-3 * abs(value)


def test_bench_prints_each_row_with_consistent_ratios(capsys):
    main(
        ["bench", "--model_name", "vit_tiny_patch16_224", "--image_size", "64"]
        + ["--classes", "3", "--labels", "1", "--cluster_k", "2", "--device", "cpu"]
        + ["--warmup", "0", "--repeats", "1", "--predict_images", "2", "--num_workers", "0"]
    )
    out = capsys.readouterr().out
    table = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ROWS:
            table[cells[0]] = cells
    assert tuple(table) == ROWS, out
    times = {name: float(cells[1]) for name, cells in table.items()}
    bare = times["encoder"]
    assert all(t > 0 for t in times.values()), times
    for name, cells in table.items():
        assert _close(float(cells[2]), times[name] / bare, 3), (name, cells, bare)
    extra = {name: float(table[name][3]) for name in ("stage-1 mask", "encoder + K-means")}
    assert all(e > 0 for e in extra.values()) and table["stage-0 step"][3] == "—"
    summary = re.search(r"mask extra time ([\d.]+)× smaller .* alone: ([\d.]+)× the encoder", out)
    assert summary, out
    assert _close(float(summary[1]), extra["encoder + K-means"] / extra["stage-1 mask"], 1)
    assert _close(float(summary[2]), (bare + extra["stage-1 mask"]) / bare, 3)
    predict = re.search(
        r"freeseg predict: ([\d.e+]+) images/s end to end, ([\d.]+)% of the bare forward's "
        r"([\d.e+]+) images/s",
        out,
    )
    assert predict, out
    rate, share, bare_rate = float(predict[1]), float(predict[2]) / 100, float(predict[3])
    assert rate > 0 and _close(bare_rate, 1 / bare, 0)  # batch 1
    assert _close(share, rate / bare_rate, 3)
