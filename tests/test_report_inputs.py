"""reports.build on bad input: every input is checked before anything is written, each error is one line naming the
file and the fix (exit 2), and an earlier report in --out is left exactly as it was, also after a failure
part-way; a rebuild replaces the report's own entries as a whole and nothing else."""
import json

import pandas as pd
import pytest

from reports import build, figures
from tests.test_reports import row, series_folder


@pytest.fixture()
def inputs(tmp_path):
    """A results table, a checks file and a series folder that build a report, and that report in `out`."""
    table = tmp_path / "table.parquet"
    pd.DataFrame([row("coco30k@1", "fid30k", 30.0, 29.5, 30.5, kind="fidelity", scorer="fid_clean"),
                  row("coco30k@1", "clip_b32", 0.3, 0.29, 0.31, kind="clip_score", scorer="clip_vitb32")]
                 ).assign(prompt_limit=None, n_prompts=200).to_parquet(table)
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"later": {"kind": "checkpoints", "series": "run"}}))
    folder, _ = series_folder(tmp_path)
    out = tmp_path / "report"
    argv = ["--table", table, "--out", out, "--checks", checks, "--series", folder]
    build.main([str(a) for a in argv])
    (out / "notes.txt").write_text("the user's own file")
    return {"table": table, "checks": checks, "series": folder, "out": out, "argv": argv, "root": tmp_path}


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(path, text):
    path.write_text(text)
    return path


BAD = {  # name → (how to spoil the inputs: returns extra argv, text the error must hold)
    "table not parquet": (lambda i: (_write(i["table"], "PAR1 but not really"), [])[1], "is not a readable parquet"),
    "paper values empty": (lambda i: ["--paper-values", _write(i["root"] / "paper.yaml", "")], "got an empty file"),
    "paper values a list": (lambda i: ["--paper-values", _write(i["root"] / "paper.yaml", "- 1\n")], "got a list"),
    "paper values broken": (lambda i: ["--paper-values", _write(i["root"] / "paper.yaml", "a: [")], "not valid YAML"),
    "paper values missing": (lambda i: ["--paper-values", i["root"] / "none.yaml"], "cannot be read"),
    "paper section missing": (lambda i: ["--paper-values", _write(i["root"] / "paper.yaml", "wise: {}\n")],
                              "['table2_coco_fid30k', 'table3_t2i_compbench', 'geneval', 'ablation'] are missing"),
    "checks a list": (lambda i: (_write(i["checks"], "[]"), [])[1], "got a list"),
    "checks misspelt key": (lambda i: (_write(i["checks"], '{"c": {"kind": "cfg", "model": "m", "bench": "b", '
                                                          '"metric": "x", "cfg": [1, 2], "smapler": "ddim"}}'), [])[1],
                            "check 'c': unknown key(s) ['smapler']"),
    "series not a folder": (lambda i: ["--series", i["root"] / "nowhere"], "not a folder"),
    "series csv columns": (lambda i: (_write(i["series"] / "checkpoints.csv", "path,step\nx,1\n"), [])[1],
                           "lacks the columns ['series', 'model', 'status', 'reason']"),
    "series step": (lambda i: (_write(i["series"] / "checkpoints.csv", "series,step,model,path,status,reason\n"
                                                                       "run,ten,run@10,x,ok,\n"), [])[1],
                    "line 2: step 'ten' is not a whole number"),
    "series csv missing": (lambda i: ((i["series"] / "checkpoints.csv").unlink(), [])[1],
                           "checkpoints.csv: cannot be read"),
    "series csv binary": (lambda i: ((i["series"] / "checkpoints.csv").write_bytes(b"\xff\xfe\xfa"), [])[1],
                          "checkpoints.csv: cannot be read"),
    "series settings a list": (lambda i: (_write(i["series"] / "settings.json", "[]"), [])[1],
                               "expected a JSON object, got a list"),
    "gate broken": (lambda i: (_write(i["series"] / "gate" / "run@2000.json", '{"verdict": '), [])[1],
                    "not valid JSON"),
    "gate without candidate": (lambda i: (_write(i["series"] / "gate" / "run@2000.json", "{}"), [])[1],
                               "no candidate_model"),
    "train stats broken": (lambda i: ["--ablation", "adaln=pix", "--train-stats",
                                      f"pix={_write(i['root'] / 'stats.json', '{')}"], "stats.json: not valid JSON"),
    "samples a file": (lambda i: ["--samples", i["table"]],
                       "table.parquet is a file; give the folder of the generated cells"),
    "out a file": (lambda i: ["--out", i["table"]], "is a file; give a folder for the report"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_input_is_one_error_line_and_leaves_the_earlier_report(case, inputs, cli_error):
    spoil, message = BAD[case]
    before = snapshot(inputs["root"] / "report")
    extra = spoil(inputs)
    err = cli_error(build.main, inputs["argv"] + extra)
    assert message in err, err
    assert len(err.strip().splitlines()) == 2  # the error, and how to see its traceback
    assert snapshot(inputs["out"]) == before  # also: no staging folder left in it


def test_a_failure_part_way_leaves_the_earlier_report(inputs, monkeypatch):
    before = snapshot(inputs["out"])

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "fid_vs_clip", broken)
    with pytest.raises(RuntimeError, match="disk full"):  # not one of the suite's own errors: its traceback stays
        build.main([str(a) for a in inputs["argv"]])
    assert snapshot(inputs["out"]) == before


def test_an_interrupted_move_into_out_is_undone(inputs, monkeypatch):
    """publish moves the old entries aside, then the new ones in: a rename that fails (or a Ctrl-C) between them
    must leave the old report, not new tables without a README."""
    import os

    before = snapshot(inputs["out"])
    real_replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        # the new figures/ moving in (tables/ is new already); the undo's renames go through
        if str(dst) == str(inputs["out"] / "figures") and ".building-" in str(src) and ".old-" not in str(src):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(build.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.main([str(a) for a in inputs["argv"]])
    assert inputs["out"] / "tables" in calls
    assert snapshot(inputs["out"]) == before


def test_a_rebuild_replaces_the_reports_entries_and_nothing_else(inputs):
    out = inputs["out"]
    assert (out / "checks.json").is_file() and (out / "tables" / "series__run.md").is_file()
    (out / "tables" / "stale.md").write_text("from an older build")
    result = build.build(inputs["table"], out, log=lambda line: None)  # no checks, no series this time
    assert not (out / "checks.json").exists() and not (out / "tables" / "stale.md").exists()
    assert not (out / "tables" / "series__run.md").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert result["tables"] and all(p.is_file() and p.parent == out / "tables" for p in result["tables"])
    assert "checks" not in (out / "README.md").read_text()


def test_absent_optional_inputs_are_named_in_the_report_not_errors(inputs, capsys):
    # the DAG passes the samples folder before anything is generated, and a train-stats path before training ran
    root = inputs["root"]
    build.main([str(a) for a in inputs["argv"]] + ["--samples", str(root / "samples"), "--scores",
                                                    str(root / "scores"), "--ablation", "adaln=pix",
                                                    "--train-stats", f"pix={root / 'not-trained' / 'stats.json'}"])
    assert "not written: " in capsys.readouterr().out
    readme = (inputs["out"] / "README.md").read_text()
    assert f"**sample_grid**: the --samples folder {root / 'samples'} does not exist" in readme
    assert f"**worst_k**: needs both --scores and --samples (scores name the images): the --scores folder" in readme
    assert "not-trained/stats.json not found" in (inputs["out"] / "tables" / "ablation.md").read_text()

