"""Stamps and all-or-nothing outputs: what lets one tool skip the other's finished work."""
from __future__ import annotations

import json

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


def test_directory_digest_ignores_hidden_bookkeeping_but_not_content(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.npy").write_bytes(b"123")
    before = stage.digest(d)
    (d / ".snakemake_timestamp").write_text("now")
    assert stage.digest(d) == before
    (d / "x.npy").write_bytes(b"124")
    assert stage.digest(d) != before


def counting_stage(tmp_path, config, calls):
    inp, out = tmp_path / "in.txt", tmp_path / "out.txt"

    def work():
        calls.append(1)
        write(out, inp.read_text().upper())
    stage.run_stage("demo", config, [inp], [out], work)
    return out


def test_run_stage_skips_only_while_config_inputs_and_outputs_are_unchanged(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    calls: list[int] = []
    out = counting_stage(tmp_path, {"lr": 1}, calls)
    counting_stage(tmp_path, {"lr": 1}, calls)
    assert len(calls) == 1 and out.read_text() == "ABC"
    counting_stage(tmp_path, {"lr": 2}, calls)               # config changed
    assert len(calls) == 2
    (tmp_path / "in.txt").write_text("xyz")                   # input changed
    counting_stage(tmp_path, {"lr": 2}, calls)
    assert len(calls) == 3 and out.read_text() == "XYZ"
    out.write_text("tampered")                                # output changed behind our back
    counting_stage(tmp_path, {"lr": 2}, calls)
    assert len(calls) == 4 and out.read_text() == "XYZ"


def test_a_failed_stage_leaves_neither_output_nor_stamp(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    counting_stage(tmp_path, {}, [])
    out = tmp_path / "out.txt"

    def failing_work():
        with stage.atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise stage.PipelineError("bad input")
    with pytest.raises(stage.PipelineError):
        stage.run_stage("demo", {"changed": True}, [tmp_path / "in.txt"], [out], failing_work)
    assert not out.exists()
    assert not any(p.name.endswith(".stamp.json") for p in tmp_path.iterdir())


def test_stamp_records_output_digests(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    counting_stage(tmp_path, {}, [])
    stamp = json.loads((tmp_path / ".out.txt.stamp.json").read_text())
    assert stamp["outputs"] == {str(tmp_path / "out.txt"): stage.digest(tmp_path / "out.txt")}
