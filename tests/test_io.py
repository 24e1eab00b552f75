"""replace_folder replaces only folders this tool wrote and never touches their siblings."""

import os

import pytest

from personactl._io import check_replaceable, replace_folder, temp_folder_beside
from personactl.errors import OutputError, PersonactlError

MARK = "persona.json"


def _folder(path, **files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_folder_of_ours_is_replaced_and_no_sibling_is_touched(tmp_path):
    target = _folder(tmp_path / "out", **{MARK: "old", "stale.bin": "x"})
    sibling = _folder(tmp_path / "out.old", **{"notes.txt": "mine"})
    finished = _folder(temp_folder_beside(target), **{MARK: "new"})
    assert replace_folder(finished, target, owned=MARK) == target
    assert sorted(p.name for p in target.iterdir()) == [MARK] and (target / MARK).read_text() == "new"
    assert (sibling / "notes.txt").read_text() == "mine"  # the old code deleted any `out.old`
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.old"]  # nothing set aside is left


def test_a_folder_of_someone_elses_files_is_refused_and_kept(tmp_path):
    target = _folder(tmp_path / "runs", **{"results.jsonl": "precious"})
    finished = _folder(tmp_path / "new", **{MARK: "new"})
    with pytest.raises(OutputError, match=r"not a folder personactl wrote \(no persona.json in it\)") as caught:
        replace_folder(finished, target, owned=MARK)
    assert isinstance(caught.value, PersonactlError) and "\n" not in str(caught.value)
    assert (target / "results.jsonl").read_text() == "precious" and (finished / MARK).is_file()


def test_empty_or_absent_targets_are_fine_and_any_marker_counts(tmp_path):
    for target in (tmp_path / "absent", _folder(tmp_path / "empty"), _folder(tmp_path / "other", **{"b.json": "{}"})):
        finished = _folder(temp_folder_beside(target), **{"a.json": "new"})
        replace_folder(finished, target, owned=("a.json", "b.json"))
        assert (target / "a.json").read_text() == "new"


def test_the_current_folder_its_parents_files_and_links_are_refused(tmp_path, monkeypatch):
    work = _folder(tmp_path / "work", **{MARK: "ours, but it is where we stand"})
    monkeypatch.chdir(work)
    for target, why in ((".", "current folder"), ("..", "current folder"), (str(work), "current folder")):
        with pytest.raises(OutputError, match=why):
            check_replaceable(target, MARK)
    (tmp_path / "file").write_text("x")
    os.symlink(_folder(tmp_path / "elsewhere", **{MARK: "x"}), tmp_path / "link")
    for target in (tmp_path / "file", tmp_path / "link"):
        with pytest.raises(OutputError, match="a file or a link"):
            check_replaceable(target, MARK)
    assert (work / MARK).is_file()


def test_a_failed_move_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = _folder(tmp_path / "out", **{MARK: "old"})
    finished = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError):
        replace_folder(finished, target, owned=MARK)
    assert (target / MARK).read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
