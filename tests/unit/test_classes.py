"""Class lists and templates, against hand-written files."""

from __future__ import annotations

import pytest

from freeseg.data.classes import load_classes, load_templates


def test_class_file_with_synonyms_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(
        "# my classes\n\ncat, kitty , feline\n  # indented comment\ndog\n\nhot dog,frankfurter\n",
        encoding="utf-8",
    )
    classes = load_classes(str(path))
    assert classes.names == [["cat", "kitty", "feline"], ["dog"], ["hot dog", "frankfurter"]]
    assert classes.display_names == ["cat", "dog", "hot dog"]
    assert len(classes) == 3


def test_builtin_class_lists():
    voc = load_classes("voc")
    assert len(voc) == 20
    assert voc.display_names[0] == "aeroplane" and voc.display_names[14] == "person"
    coco = load_classes("coco_object")
    assert len(coco) == 80
    assert coco.display_names[0] == "person" and coco.display_names[-1] == "toothbrush"


def test_class_file_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_classes(str(missing))
    bad = tmp_path / "bad.txt"
    bad.write_text("cat\ndog,,puppy\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2"):
        load_classes(str(bad))
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat, kitty\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_classes(str(dup))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no class"):
        load_classes(str(empty))


def test_builtin_templates():
    assert load_templates("single") == ["a photo of a {}."]
    clip80 = load_templates("clip80")
    assert len(clip80) == 80 and len(set(clip80)) == 80
    assert clip80[0] == "a bad photo of a {}."
    assert "itap of a {}." in clip80
    assert all(t.count("{}") == 1 for t in clip80)


def test_template_without_placeholder_names_file_and_line(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\na photo of something.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"templates\.txt, line 2"):
        load_templates(str(path))


def test_one_class_and_non_utf8_class_files_are_named(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("# my class\ncat, kitty\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"one\.txt: 1 class listed \('cat'\); at least 2"):
        load_classes(str(one))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café\nthé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt: not UTF-8 text \(byte 3\)"):
        load_classes(str(latin))
    bom = tmp_path / "bom.txt"
    bom.write_bytes("cat\ndog\n".encode("utf-8-sig"))
    assert load_classes(str(bom)).names == [["cat"], ["dog"]]
