"""``make reproduce-voc|coco``: the printed chain, and the refusal to start without data."""

from __future__ import annotations

from freeseg.reproduce import check_paths, commands, main


def test_dry_run_prints_the_whole_chain_with_the_given_paths(monkeypatch, capsys):
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("GCC3M", "/d/gcc3m/{00000..00331}.tar")
    monkeypatch.setenv("DINO", "/d/dino_vitbase8_pretrain.pth")
    monkeypatch.setenv("VOC", "/d/VOC2012")
    assert main(["voc"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["fit", "predict", "fit", "test"]
    assert "configs/iclip_dense.yaml" in lines[0] and "/d/dino_vitbase8_pretrain.pth" in lines[0]
    assert "/d/gcc3m/{00000..00331}.tar" in lines[0]
    assert "configs/pseudo_voc.yaml" in lines[1] and "/d/VOC2012" in lines[1]
    assert "configs/refine_voc.yaml" in lines[2] and "pseudo_voc/masks" in lines[2]
    assert "crf=true" in lines[3]


def test_without_data_nothing_runs_and_each_missing_input_is_named(monkeypatch, tmp_path, capsys):
    for var in ("DRY_RUN", "GCC3M", "DINO", "VOC", "COCO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DINO", str(tmp_path / "absent.pth"))
    assert main(["coco"]) == 2
    err = capsys.readouterr().err
    assert "GCC3M is not set" in err and "COCO is not set" in err
    assert "absent.pth' does not exist" in err and "Real data" in err


def test_coco_chain_validates_stage0_on_coco_object():
    env = {"GCC3M": "g/{0..1}.tar", "DINO": "w.pth", "COCO": "/c"}
    chain = commands(env, "coco")
    assert any("classes=coco_object" in arg for arg in chain[0])
    assert check_paths(env, "coco")  # nothing of it exists here
