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


def test_the_next_run_removes_temporaries_of_killed_runs_only(tmp_path):
    import os
    out = tmp_path / "out.txt"
    dead, live = tmp_path / ".out.txt.tmp-999999999", tmp_path / f".out.txt.tmp-{os.getppid()}"
    dead.mkdir()
    live.write_text("another run, still going")
    write(out, "done")
    assert not dead.exists() and live.exists() and out.read_text() == "done"
