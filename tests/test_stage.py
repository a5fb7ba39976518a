"""All-or-nothing outputs: a failed or killed stage leaves nothing either tool takes as finished."""
from __future__ import annotations

import pytest

from pipeline import stage


def write(path, text):
    with stage.atomic_path(path) as tmp:
        tmp.write_text(text)


def test_atomic_path_moves_into_place_only_on_success(tmp_path):
    out = tmp_path / "sub" / "out.txt"
    write(out, "done")
    assert out.read_text() == "done"
    with pytest.raises(RuntimeError):
        with stage.atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert out.read_text() == "done"                       # the old output is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]   # no temp file left


def test_atomic_directory_replaces_the_old_one(tmp_path):
    out = tmp_path / "prepared"
    for content in ("a", "b"):
        with stage.atomic_path(out) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert [p.name for p in out.iterdir()] == ["b"]


def test_a_missing_json_input_is_one_line_naming_it(tmp_path):
    with pytest.raises(stage.PipelineError, match=r"nope.json: no such file; run the stage that writes it"):
        stage.read_json(tmp_path / "nope.json")
