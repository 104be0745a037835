"""Paper tables and figures from a synthetic results table with known values (reports/)."""
import csv
import io
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from reports import build, figures, tables, tabular
from reports.tables import MixedProtocolVersions, NoData

PAPER = tables.load_paper_values()


def row(protocol, metric, value, lo, hi, model="pix", cfg=4.5, sampler="dpm-solver", steps=20, kind=None,
        scorer=None, bench=None, **extra):
    return {"model": model, "bench": bench or protocol.split("@")[0], "protocol": protocol, "sampler": sampler,
            "steps": steps, "cfg": cfg, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "n": 300,
            "n_failed": 0, "scorer": scorer or metric, "weights_fingerprint": "w0", "model_fingerprint": "f0",
            "higher_is_better": not str(scorer or "").startswith("fid"), "kind": kind, **extra}


@pytest.fixture()
def results():
    rows = []
    for cfg, shift in ((2.0, 0.0), (4.5, 0.01)):
        rows += [
            row("t2i_compbench@1/color", "compbench_blip_vqa", 0.5123 + shift, 0.5011 + shift, 0.5237 + shift,
                cfg=cfg, kind="compbench_blip_vqa", scorer="compbench_blipvqa_np8", bench="t2i_color", np_num=8),
            row("t2i_compbench@1/color", "clip_b32", 0.3111, 0.30, 0.32, cfg=cfg, kind="clip_score", bench="t2i_color"),
            row("t2i_compbench@1/spatial", "compbench_spatial_2d", 0.1875 + shift, 0.1700, 0.2050 + shift, cfg=cfg,
                kind="compbench_spatial_2d", bench="t2i_spatial"),
            row("coco30k@1", "fid30k", 30.25 - 10 * shift, 29.5, 31.0, cfg=cfg, kind="fidelity",
                scorer="fid_clean_inception_coco256"),
            row("coco30k@1", "clip_b32", 0.301 + shift, 0.299, 0.305 + shift, cfg=cfg, kind="clip_score",
                scorer="clip_vitb32"),
        ]
    wise = {"cultural": 0.412, "time": 0.5, "space": 0.45, "biology": 0.4, "physics": 0.55, "chemistry": 0.3}
    rows.append(row("wise@1", "wise_judge", 0.444, 0.43, 0.46, kind="wise", scorer="wise_judge:gpt-4o-2024-05-13"))
    rows += [row("wise@1", f"wise_judge/{c}", v, v - 0.02, v + 0.02, kind="wise",
                 scorer="wise_judge:gpt-4o-2024-05-13") for c, v in wise.items()]
    tasks = {"single_object": 0.95, "two_object": 0.4, "counting": 0.35, "colors": 0.7, "position": 0.05,
             "color_attr": 0.06}
    rows.append(row("geneval@1", "geneval", 0.418, 0.40, 0.44, kind="geneval", scorer="geneval_mask2former_clip"))
    rows += [row("geneval@1", f"geneval/{t}", v, v - 0.03, v + 0.03, kind="geneval", scorer="geneval_mask2former_clip")
             for t, v in tasks.items()]
    # T2I-CompBench's rules on another prompt set (the shapes world), beside its FID/CLIP subset
    rows += [row("shapes@1/color", "shapes_binding", 0.25, 0.15, 0.35, kind="compbench_blip_vqa", np_num=8),
             row("shapes@1/spatial", "shapes_spatial", 0.125, 0.05, 0.2, kind="compbench_spatial_2d"),
             row("shapes@1/fid", "clip_shapes", 0.2, 0.18, 0.22, kind="clip_score"),
             row("shapes@1/geneval", "shapes_geneval", 0.5, 0.4, 0.6, kind="geneval", scorer="geneval_shapes_oracle"),
             row("shapes@1/geneval", "shapes_geneval/counting", 0.25, 0.1, 0.4, kind="geneval",
                 scorer="geneval_shapes_oracle")]
    for step, fid in ((1000, 40.0), (2000, 35.0), (3000, 32.5)):  # a checkpoint series
        rows.append(row("coco30k@1", "fid30k", fid, fid - 1, fid + 1, model=f"run@{step}", kind="fidelity",
                        scorer="fid_clean_inception_coco256"))
    return pd.DataFrame(rows)


def test_paper_values_both_compbench_sets_and_fid_caveat():
    t3 = {r["key"]: r for r in PAPER["table3_t2i_compbench"]["rows"]}
    assert t3["pixart_alpha_set_a"]["values"]["color"] == pytest.approx(0.6886)
    assert t3["pixart_alpha_set_b"]["values"]["color"] == pytest.approx(0.6690)
    assert (t3["pixart_alpha_set_a"]["np_num"], t3["pixart_alpha_set_b"]["np_num"]) == (2, 8)
    assert "np_num" in PAPER["table3_t2i_compbench"]["why_sets_differ"]
    pixart = PAPER["table2_coco_fid30k"]["rows"][0]
    assert pixart["fid30k"] == pytest.approx(7.32) and pixart["resolution"] == 256
    assert pixart["checkpoint"] == "PixArt-XL-2-256x256-MSCOCO-FID732.pth"
    assert PAPER["wise"]["rows"][0]["values"]["overall"] == pytest.approx(0.47)


def test_table3_paper_sets_and_measured_cells(results):
    t = tables.table3(results, PAPER)
    md = tabular.to_markdown(t)
    color = next(line for line in md.splitlines() if line.startswith("| Color |"))
    assert "| 0.6690 |" in color and "| 0.6886 |" in color
    assert "0.5123 [0.5011, 0.5237][^table3-" in color      # cfg 2: value [CI] + footnote
    assert "0.5223 [0.5111, 0.5337]" in color                 # cfg 4.5
    assert "0.3111" not in color                              # BLIP-VQA, not CLIP, scores colour
    assert "[^table3-1]: t2i_compbench@1/color: pix, metric compbench_blip_vqa" in md
    assert "np_num=8" in md and "Why the two PixArt-α sets differ" in md
    rows = list(csv.DictReader(io.StringIO(tabular.to_csv(t))))
    color = next(r for r in rows if r["Category"] == "Color")
    assert color["paper: PixArt-α, Set B (np_num=8, current code)"] == "0.6690"
    assert color["paper: PixArt-α, Set A (np_num=2 era)"] == "0.6886"
    measured = [k for k in color if k.startswith("measured:") and "cfg2 " in k]
    by_suffix = {k.rsplit(")", 1)[-1].strip(): color[k] for k in measured}
    assert by_suffix == {"": "0.5123", "ci_low": "0.5011", "ci_high": "0.5237", "protocol": "t2i_compbench@1/color"}
    spatial = next(r for r in rows if r["Category"] == "2D Spatial")
    assert spatial["paper: SD v1.4"] == "0.1246"
    tex = tabular.to_latex(t)
    assert r"PixArt-$\alpha$" in tex and r"np\_num" in tex and r"0.5123 {\scriptsize[0.5011, 0.5237]}" in tex


def test_compbench_rules_table_holds_other_prompt_sets_only(results):
    t = tables.table_compbench_rules(results, PAPER)
    assert t.rows == ["Color", "2D Spatial"]                  # Table 3's order and labels; no FID/CLIP subset
    [column] = [c for c in t.columns if c.kind == "measured"]
    assert column.label == "measured: pix dpm-solver-20 cfg4.5 (shapes@1, np_num=8)"
    assert t.cell("Color", column.key).value == pytest.approx(0.25)
    assert t.cell("2D Spatial", column.key).value == pytest.approx(0.125)
    assert not [c for c in t.columns if c.kind == "paper"]    # nothing published on these prompts
    md = tabular.to_markdown(t)
    assert "0.2500 [0.1500, 0.3500]" in md and "shapes@1/color: pix, metric shapes_binding" in md
    assert "0.5123" not in md                                 # T2I-CompBench's own rows stay in Table 3
    assert "scores 1.0 in every category" in md
    with pytest.raises(NoData, match="no compbench_\\* scores outside t2i_compbench"):
        tables.table_compbench_rules(results[~results["protocol"].str.startswith("shapes")], PAPER)


def test_geneval_rules_table_holds_other_prompt_sets_only(results):
    t = tables.table_geneval_rules(results, PAPER)
    [column] = [c for c in t.columns if c.kind == "measured"]
    assert "shapes_geneval, shapes@1" in column.label and not [c for c in t.columns if c.kind == "paper"]
    assert t.cell("Overall", column.key).value == pytest.approx(0.5)
    assert t.cell("Counting", column.key).value == pytest.approx(0.25)
    assert t.cell("Colors", column.key) is None
    md = tabular.to_markdown(t)
    assert "0.418" not in md and "Prompt sets: shapes" in md and "Mask2Former" not in md
    # and GenEval's own table keeps only GenEval's prompts beside the paper's values
    geneval = tables.table_geneval(results, PAPER)
    assert not any("shapes@1" in c.label for c in geneval.columns)
    with pytest.raises(NoData, match="no geneval scores outside the geneval protocol"):
        tables.table_geneval_rules(results[~results["protocol"].str.startswith("shapes")], PAPER)


def test_table2_paper_rows_and_measured(results):
    t = tables.table2(results, PAPER)
    md = tabular.to_markdown(t)
    pixart = next(line for line in md.splitlines() if line.startswith("| PixArt-α (256 px)"))
    assert "| 7.32[^table2-" in pixart and "0.6B" in pixart and "25M" in pixart and "| 753" in pixart
    assert "PixArt-XL-2-256x256-MSCOCO-FID732.pth" in md
    assert "| 9.09" in next(line for line in md.splitlines() if line.startswith("| GigaGAN"))
    measured = next(line for line in md.splitlines() if line.startswith("| pix dpm-solver-20 cfg2 "))
    assert "30.25 [29.50, 31.00]" in measured and "0.3010 [0.2990, 0.3050]" in measured
    assert "coco30k@1: pix, metric fid30k" in md
    rows = list(csv.DictReader(io.StringIO(tabular.to_csv(t))))
    assert next(r for r in rows if r["Method"].startswith("PixArt"))["FID-30K (paper)"] == "7.32"


def test_wise_table(results):
    t = tables.table_wise(results, PAPER)
    md = tabular.to_markdown(t)
    overall = next(line for line in md.splitlines() if line.startswith("| Overall |"))
    assert "| 0.47 |" in overall and "0.444 [0.430, 0.460]" in overall
    cultural = next(line for line in md.splitlines() if line.startswith("| Cultural |"))
    assert "| 0.45 |" in cultural and "0.412 [0.392, 0.432]" in cultural
    assert "wise@1/" not in md and "wise@1: pix, metric wise_judge/cultural" in md
    assert "failed=0" in md


def test_a_limited_run_gets_its_own_labelled_column_beside_the_full_one(results, tmp_path):
    """A benchmark cut to its first N prompts (`limit:`) beside the full run of the same configuration: a
    column each (one column would hold two numbers per cell), the limited one saying so in its label."""
    full = results.assign(n_prompts=300)
    cut = full[full["protocol"].isin(["t2i_compbench@1/color", "wise@1"]) & (full["cfg"] == 4.5)]
    cut = cut.assign(value=cut["value"] - 0.1, prompt_limit=50, n_prompts=50, bench=cut["bench"] + "_smoke")
    both = pd.concat([full, cut], ignore_index=True)
    t3 = tables.table3(both, PAPER)
    labels = [c.label for c in t3.columns if c.kind == "measured" and "cfg4.5" in c.label]
    assert labels == ["measured: pix dpm-solver-20 cfg4.5 (t2i_compbench@1, np_num=8)",
                      "measured: pix dpm-solver-20 cfg4.5 (t2i_compbench@1, first 50 prompts, np_num=8)"]
    assert t3.cell("Color", f"measured|t2i_compbench@1|{labels[1]}").value == pytest.approx(0.4223)
    assert t3.cell("2D Spatial", f"measured|t2i_compbench@1|{labels[1]}") is None   # only colour was cut
    wise = tables.table_wise(both, PAPER)
    assert [c.label for c in wise.columns if c.kind == "measured"] == [
        "measured: pix dpm-solver-20 cfg4.5 (wise_judge, wise@1)",
        "measured: pix dpm-solver-20 cfg4.5 (wise_judge, wise@1, first 50 prompts)"]
    # the figure over cfg draws the limited run as its own line (it zig-zagged through two values at cfg 4.5)
    paths = figures.compbench_over_cfg(both, tmp_path, PAPER)
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "first 50 prompts" in svg
    # the category's official scorer is chosen within each run: a limited run scored by another metric stays
    other = cut[cut["protocol"] == "t2i_compbench@1/color"].assign(metric="clip_b32", kind="clip_score")
    mixed = pd.concat([full, other[other["metric"] == "clip_b32"].drop_duplicates("cfg")], ignore_index=True)
    assert any("first 50 prompts" in c.label for c in tables.table3(mixed, PAPER).columns)
    # a limit above the set's size cut nothing: no label
    loose = full.assign(prompt_limit=1000)
    assert not any("first" in c.label for c in tables.table3(loose, PAPER).columns)


def test_mixed_protocol_versions_separate_or_refuse(results):
    extra = pd.DataFrame([row("t2i_compbench@2/color", "compbench_blip_vqa", 0.4321, 0.42, 0.44, cfg=2.0,
                              kind="compbench_blip_vqa", bench="t2i_color", np_num=8)])
    mixed = pd.concat([results, extra], ignore_index=True)
    t = tables.table3(mixed, PAPER)
    v1 = [c for c in t.columns if c.kind == "measured" and c.protocol == "t2i_compbench@1"]
    v2 = [c for c in t.columns if c.kind == "measured" and c.protocol == "t2i_compbench@2"]
    assert v1 and len(v2) == 1 and all("t2i_compbench@2" in c.label for c in v2)
    assert t.cell("Color", v2[0].key).value == pytest.approx(0.4321)
    assert t.cell("2D Spatial", v2[0].key) is None              # v2 never borrows a v1 number
    for col in v1:
        cell = t.cell("Color", col.key)
        assert cell.protocol.startswith("t2i_compbench@1")
    with pytest.raises(MixedProtocolVersions, match=r"t2i_compbench@1, t2i_compbench@2"):
        tables.table3(mixed, PAPER, mixed_versions="refuse")
    tables.table3(results, PAPER, mixed_versions="refuse")       # one version: fine


def test_np_num_mixed_in_one_column_refused(results):
    odd = results.copy()
    odd.loc[odd["metric"] == "compbench_spatial_2d", "np_num"] = 2
    with pytest.raises(MixedProtocolVersions, match="np_num"):
        tables.table3(odd, PAPER)


def test_empty_and_missing_data_messages(results, tmp_path):
    with pytest.raises(NoData, match="empty"):
        tables.table3(results.iloc[0:0], PAPER)
    with pytest.raises(NoData, match=r"no wise@.*protocols present: coco30k@1"):
        tables.table_wise(results[results["protocol"] == "coco30k@1"], PAPER)
    empty = tmp_path / "empty.parquet"
    results.iloc[0:0].to_parquet(empty)
    messages = []
    out = build.build(empty, tmp_path / "rep", log=messages.append)
    assert out["tables"] == [] and out["figures"] == []
    # the report rule's two folders exist (Snakemake's outputs), and are empty
    assert [list((tmp_path / "rep" / f).iterdir()) for f in ("tables", "figures")] == [[], []]
    assert any("no rows" in m for m in messages)
    assert "no rows" in (tmp_path / "rep" / "README.md").read_text()


def test_figures_png_and_svg(results, tmp_path):
    assert matplotlib.get_backend().lower() == "agg"
    paths = figures.fid_vs_clip(results, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".svg"}
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "cfg 2" in svg and "cfg 4.5" in svg and "coco30k@1" in svg
    paths = figures.compbench_over_cfg(results, tmp_path, PAPER)
    assert sorted(p.name for p in paths) == ["compbench_over_cfg__t2i_compbench_1.png",
                                             "compbench_over_cfg__t2i_compbench_1.svg"]
    paths = figures.metric_vs_step(results, tmp_path)
    assert [p.name for p in paths] == ["step__run__coco30k_1__fid30k.png", "step__run__coco30k_1__fid30k.svg"]
    for p in tmp_path.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = results[results["cfg"] == 4.5]
    with pytest.raises(NoData, match="cfg"):
        figures.compbench_over_cfg(single, tmp_path / "x", PAPER)
    with pytest.raises(NoData, match="two or more steps"):
        figures.metric_vs_step(results[~results["model"].str.startswith("run@")], tmp_path / "x")


def make_cells(root, scores_root=None):
    """Tiny synthetic cells: 3 prompts × 2 images at cfg 1.0 and 4.5, solid-colour 8×8 PNGs."""
    from PIL import Image

    for cfg in (1.0, 4.5):
        cell = root / "pix" / "demo" / "dpm-solver-20" / f"cfg{cfg}"
        cell.mkdir(parents=True)
        records = []
        for p in range(3):
            for i in range(2):
                sid = f"p{p:06d}_{i:02d}"
                Image.new("RGB", (8, 8), (40 * p, 100 * i, int(cfg * 40))).save(cell / f"{sid}.png")
                records.append({"sample_id": sid, "prompt_id": f"p{p:06d}", "image_index": i,
                                "prompt": f"prompt number {p}", "file": f"{sid}.png",
                                "metadata": json.dumps({}), "cfg": cfg})
        pd.DataFrame(records).to_parquet(cell / "manifest.parquet")
        if scores_root is not None:
            sdir = scores_root / "pix" / "demo" / "dpm-solver-20" / f"cfg{cfg}"
            sdir.mkdir(parents=True)
            frame = pd.DataFrame(records)[["sample_id", "prompt_id", "image_index"]]
            frame["score"] = np.arange(len(frame), dtype=float) / 10
            frame.loc[0, "score"] = np.nan
            frame["error"] = [("p000000_00.png: broken" if k == 0 else None) for k in range(len(frame))]
            frame.to_parquet(sdir / "clip_b32.parquet")
            fid = frame.assign(score=np.nan, error=None)
            fid.to_parquet(sdir / "fid30k.parquet")          # set-level metric: no per-image scores


def test_sample_grid_and_worst_k(tmp_path):
    samples, scores = tmp_path / "samples", tmp_path / "scores"
    make_cells(samples, scores)
    paths = figures.sample_grid(samples, tmp_path / "fig", max_prompts=2)
    assert [p.name for p in paths] == ["grid__pix__demo__dpm-solver-20.png", "grid__pix__demo__dpm-solver-20.svg"]
    svg = paths[1].read_text()
    assert "cfg 1" in svg and "cfg 4.5" in svg and "prompt number 1" in svg and "prompt number 2" not in svg
    frame = pd.DataFrame([row("demo@x", "clip_b32", 0.1, 0, 0.2, model="pix", cfg=c, bench="demo")
                          for c in (1.0, 4.5)])
    paths = figures.worst_k(scores, samples, tmp_path / "fig", k=2, frame=frame)
    csvs = sorted(p for p in paths if p.suffix == ".csv")
    assert len(csvs) == 2 and len([p for p in paths if p.suffix == ".svg"]) == 2
    worst = pd.read_csv(csvs[0])
    assert list(worst["sample_id"]) == ["p000000_01", "p000001_00"]   # lowest valid scores; the failed one excluded
    assert list(worst["score"]) == [0.1, 0.2] and worst["prompt"].iloc[1] == "prompt number 1"
    svg = next(p for p in paths if p.suffix == ".svg").read_text()
    assert "1 failed" in svg and "first by sample id" not in svg
    with pytest.raises(NoData, match="no generated cells"):
        figures.sample_grid(tmp_path / "nothing", tmp_path / "fig")


def test_worst_k_says_how_many_images_share_the_cut_off_score(tmp_path):
    """All-zero compositional scores (the CPU demo's colour binding): the figure says how many images score 0, so
    its k images are not read as the only failures."""
    samples, scores = tmp_path / "samples", tmp_path / "scores"
    make_cells(samples, scores)
    path = scores / "pix/demo/dpm-solver-20/cfg4.5/clip_b32.parquet"
    pd.read_parquet(path).assign(score=[np.nan, 0.0, 0.0, 0.0, 0.0, 0.5]).to_parquet(path)
    frame = pd.DataFrame([row("demo@x", "clip_b32", 0.1, 0, 0.2, model="pix", cfg=4.5, bench="demo")])
    paths = figures.worst_k(scores, samples, tmp_path / "fig", k=2, frame=frame)
    assert "4 images score 0 (first by sample id shown)" in next(p for p in paths if p.suffix == ".svg").read_text()
    assert list(pd.read_csv(next(p for p in paths if p.suffix == ".csv"))["sample_id"]) == ["p000000_01",
                                                                                             "p000001_00"]


def test_grids_and_worst_k_draw_only_the_cells_and_metrics_of_the_results_table(tmp_path):
    """Cells and metric files an earlier config left on disk (cfg 1 here, and a dropped metric) stay out of the
    report when the results table (the DAG's current cells) does not list them."""
    samples, scores = tmp_path / "samples", tmp_path / "scores"
    make_cells(samples, scores)
    frame = pd.DataFrame([row("demo@x", "clip_b32", 0.1, 0, 0.2, model="pix", cfg=4.5, bench="demo")])
    grid = figures.sample_grid(samples, tmp_path / "fig", max_prompts=2, frame=frame)
    svg = next(p for p in grid if p.suffix == ".svg").read_text()
    assert "cfg 4.5" in svg and "cfg 1" not in svg
    stale = pd.read_parquet(scores / "pix/demo/dpm-solver-20/cfg4.5/clip_b32.parquet")
    stale.to_parquet(scores / "pix/demo/dpm-solver-20/cfg4.5/dropped_metric.parquet")
    paths = figures.worst_k(scores, samples, tmp_path / "fig", k=2, frame=frame)
    csvs = [p.name for p in paths if p.suffix == ".csv"]
    assert csvs == ["worst__clip_b32__pix__demo__dpm-solver-20__cfg4.5.csv"]
    # a table without benchmark names (one benchmark per protocol, as tables.prepare reads it) or with a NaN step
    unnamed = pd.concat([frame.drop(columns="bench").assign(protocol="demo@x"),
                         frame.drop(columns="bench").assign(protocol="demo@x", steps=np.nan)])
    assert figures.sample_grid(samples, tmp_path / "fig2", max_prompts=2, frame=unnamed)
    other = frame.assign(model="another")
    with pytest.raises(NoData, match="that the results table lists"):
        figures.sample_grid(samples, tmp_path / "fig", frame=other)
    with pytest.raises(NoData, match="that the results table lists"):
        figures.worst_k(scores, samples, tmp_path / "fig", frame=other)


def test_cli_builds_everything(results, tmp_path, capsys):
    table = tmp_path / "table.parquet"
    demo = [row("demo@1", "clip_b32", 0.1, 0, 0.2, cfg=c, bench="demo") for c in (1.0, 4.5)]  # make_cells' cells
    pd.concat([results, pd.DataFrame(demo)]).to_parquet(table)
    samples, scores = tmp_path / "samples", tmp_path / "scores"
    make_cells(samples, scores)
    out = tmp_path / "report"
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"later": {"kind": "checkpoints", "series": "none-here"}}))
    build.main(["--table", str(table), "--out", str(out), "--samples", str(samples), "--scores", str(scores),
                "--worst-k", "3", "--checks", str(checks)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("report: checks: 0 of 1 hold (not evaluated: later); 7 tables, ")
    assert "not written: none" in line
    for key in ("table2", "table3", "compbench_rules", "wise", "geneval", "geneval_rules"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{key}.{ext}").stat().st_size > 0
    names = {p.name for p in (out / "figures").iterdir()}
    for stem in ("fid_vs_clip__coco30k_1__coco30k__fid30k__clip_b32", "compbench_over_cfg__t2i_compbench_1",
                 "step__run__coco30k_1__fid30k", "grid__pix__demo__dpm-solver-20"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert any(n.startswith("worst__clip_b32__") for n in names)
    readme = (out / "README.md").read_text()  # the report itself: tables inline (the checks first), figures shown
    assert readme.index("[md](tables/checks.md)") < readme.index("[md](tables/table2.md)")
    assert (out / "tables" / "table3.md").read_text().rstrip() in readme and "[tex](tables/table3.tex)" in readme
    figure = "fid_vs_clip__coco30k_1__coco30k__fid30k__clip_b32"
    assert f"![{figure}](figures/{figure}.png)" in readme and f"[svg](figures/{figure}.svg)" in readme

    mixed = pd.concat([results, pd.DataFrame([row("wise@2", "wise_judge", 0.5, 0.4, 0.6, kind="wise")])])
    mixed.to_parquet(table)
    with pytest.raises(SystemExit) as exit_info:
        build.main(["--table", str(table), "--out", str(tmp_path / "r2"), "--mixed-versions", "refuse"])
    assert exit_info.value.code == 2
    assert "wise@1, wise@2" in capsys.readouterr().err


def test_table2_labels_a_smaller_fid_by_its_size(results):
    t = tables.table2(results, PAPER)
    labels = [c.label for c in t.columns if c.kind == "measured"]
    assert "FID (n=300) measured (fid30k, coco30k@1)" in labels and not any("FID-30K measured" in x for x in labels)
    full = results.assign(n=np.where(results["protocol"] == "coco30k@1", 30000, results["n"]))
    ten = full[full["model"] == "pix"].assign(n=10000, model="pix10k")
    labels = [c.label for c in tables.table2(pd.concat([full, ten]), PAPER).columns if c.kind == "measured"]
    assert "FID-30K measured (fid30k, coco30k@1)" in labels and "FID-10K measured (fid30k, coco30k@1)" in labels
    # the same configuration over 30K and 10K captions (a cfg sweep beside the headline run): a column each
    same = full[(full["model"] == "pix") & (full["protocol"] == "coco30k@1")]
    assert set(same["kind"]) >= {"clip_score"}, "the fixture has a CLIP score to split"
    labels = [c.label for c in tables.table2(pd.concat([full, same.assign(n=10000)]), PAPER).columns]
    assert {"CLIP score measured (clip_b32, coco30k@1)", "CLIP score (10K) measured (clip_b32, coco30k@1)"} <= set(labels)


def test_table3_both_np_num_settings_get_their_own_columns(results, tmp_path):
    np2 = results[results["metric"] == "compbench_blip_vqa"].assign(
        metric="compbench_blip_vqa_np2", np_num=2, scorer="compbench_blipvqa_np2",
        value=lambda f: f["value"] + 0.1, ci_low=lambda f: f["ci_low"] + 0.1, ci_high=lambda f: f["ci_high"] + 0.1)
    t = tables.table3(pd.concat([results, np2], ignore_index=True), PAPER)
    cfg2 = [c for c in t.columns if c.kind == "measured" and "cfg2 " in c.label]
    assert [c.label.rsplit(", ", 1)[-1] for c in cfg2] == ["np_num=8)", "np_num=2)"]
    np8, np2_col = cfg2
    assert t.cell("Color", np8.key).value == pytest.approx(0.5123)
    assert t.cell("Color", np2_col.key).value == pytest.approx(0.6123)
    assert t.cell("2D Spatial", np2_col.key).value == t.cell("2D Spatial", np8.key).value == pytest.approx(0.1875)
    assert "np_num=2 ones with Set A" in tabular.to_markdown(t)
    paths = figures.compbench_over_cfg(pd.concat([results, np2]), tmp_path, PAPER)
    assert "np_num=2" in next(p for p in paths if p.suffix == ".svg").read_text()


def test_geneval_table(results):
    t = tables.table_geneval(results, PAPER)
    md = tabular.to_markdown(t)
    lines = {line.split(" |")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    overall = lines["Overall"]
    assert "| 0.48 |" in overall and "| 0.43 |" in overall and "0.418 [0.400, 0.440]" in overall
    assert "| 0.98 |" in lines["Single object"] and "0.950 [0.920, 0.980]" in lines["Single object"]
    assert "| 0.07 |" in lines["Color attribution"] and "0.060 [0.030, 0.090]" in lines["Color attribution"]
    assert "quoted by later papers" in md and "geneval@1: pix, metric geneval/colors" in md
    rows = {r["Category"]: r for r in csv.DictReader(io.StringIO(tabular.to_csv(t)))}
    measured = next(k for k in rows["Counting"] if k.startswith("measured:") and k.endswith(")"))
    assert rows["Counting"][measured] == "0.350"
    assert rows["Counting"]["paper: PixArt-α (quoted by later papers)"] == "0.44"
    assert r"\begin{tabular}" in tabular.to_latex(t)
    with pytest.raises(NoData, match="no geneval@"):
        tables.table_geneval(results[results["protocol"] != "geneval@1"], PAPER)


def ablation_inputs():
    sam = [row("sam@1/fid2k", "fid_sam2k", fid, fid - 0.4, fid + 0.5, model=model, kind="fidelity",
               scorer="fid_clean_inception_coco256", bench="sam_fid2k")
           for model, fid in (("abl-adaln", 21.5), ("abl-single", 22.25), ("abl-noreparam", 30.0))]
    variants = {"adaln": "abl-adaln", "adaln-single": "abl-single", "no-reparam": "abl-noreparam"}
    stats = {"abl-adaln": {"variant": "adaln", "reparam": False, "params": 833_000_000,
                           "peak_memory_bytes": 29 * 2**30, "device": "NVIDIA H100 80GB HBM3"},
             "abl-single": {"variant": "adaln-single", "reparam": True, "params": 610_856_096,
                            "peak_memory_bytes": int(23.5 * 2**30), "device": "NVIDIA H100 80GB HBM3"},
             "abl-noreparam": {"variant": "adaln-single", "reparam": False, "params": 610_856_096,
                               "peak_memory_bytes": None, "device": "cpu"}}
    return pd.DataFrame(sam), variants, stats


def test_ablation_table_params_memory_and_sam_fid():
    frame, variants, stats = ablation_inputs()
    t = tables.table_ablation(frame, variants, stats, PAPER, stats_sources={"abl-adaln": "results/train/a/stats.json"})
    md = tabular.to_markdown(t)
    lines = {line.split(" |")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    adaln, single, noreparam = (lines["adaLN (per-block, DiT-style)"], lines["adaLN-single"],
                                lines["adaLN-single, no re-param"])
    assert "| 833,000,000" in adaln and "| 29.0" in adaln and "21.50 [21.10, 22.00]" in adaln
    assert "| 610,856,096" in single and "| 23.5" in single and "22.25 [21.85, 22.75]" in single
    assert single.count("610,856,096") == 2             # measured and the code-count reference
    assert "not measured" in noreparam and "30.00 [29.60, 30.50]" in noreparam
    assert "results/train/a/stats.json" in md and "Fig. 6" in md and "not quoted" in md
    rows = {r["Variant"]: r for r in csv.DictReader(io.StringIO(tabular.to_csv(t)))}
    assert rows["adaLN-single"]["#Params"] == "610856096" and rows["adaLN-single"]["Model"] == "abl-single"
    assert rows["adaLN (per-block, DiT-style)"]["Peak GPU memory, training (GiB)"] == "29.0"
    fid = next(k for k in rows["adaLN-single"] if k.startswith("FID measured") and k.endswith("cfg4.5)"))
    assert rows["adaLN-single"][fid] == "22.25" and rows["adaLN-single"][f"{fid} protocol"] == "sam@1/fid2k"
    assert "SAM FID (paper)" not in rows["adaLN-single"]    # the paper's Fig. 6 values are not in the reference


def test_ablation_table_missing_stats_wrong_variant_and_no_rows():
    frame, variants, stats = ablation_inputs()
    t = tables.table_ablation(frame, variants, {**stats, "abl-adaln": None}, PAPER)
    assert t.cell("adaLN (per-block, DiT-style)", "params").text == "n/a"
    assert "run its training recipe first" in tabular.to_markdown(t)
    swapped = {**variants, "adaln-single": "abl-noreparam", "no-reparam": "abl-single"}
    with pytest.raises(ValueError, match="abl-noreparam.*'no-reparam'"):
        tables.table_ablation(frame, swapped, stats, PAPER)
    with pytest.raises(NoData, match="no model is mapped"):
        tables.table_ablation(frame, {}, stats, PAPER)
    other = frame.assign(protocol="shapes@1/fid", bench="fid", metric="clip_fid_shapes", scorer="fid_clip_tiny_none")
    t = tables.table_ablation(other, variants, stats, PAPER)  # any protocol's FID: the demo's own CLIP-FID
    [column] = [c for c in t.columns if c.kind == "measured"]
    assert "clip_fid_shapes, shapes@1/fid" in column.label
    assert t.cell("adaLN-single", column.key).value == 22.25
    clip_only = frame.assign(metric="clip_score", scorer="clip_vitb32", kind="clip_score")
    t = tables.table_ablation(clip_only, variants, stats, PAPER)
    assert not [c for c in t.columns if c.kind == "measured"]
    assert "No FID results" in tabular.to_markdown(t)


def series_folder(root):
    """A series folder as the DAG writes it: status table, settings, one passing and one regressed gate."""
    from reports import series

    folder = root / "run"
    checkpoints = [series.Checkpoint("ck/step_1000.pth", 1000, "run@1000", "ok"),
                   series.Checkpoint("ck/step_2000.pth", 2000, "run@2000", "ok"),
                   series.Checkpoint("ck/step_2500.pth", 2500, None, "unreadable", "UnpicklingError: bad magic"),
                   series.Checkpoint("ck/step_3000.pth", 3000, "run@3000", "ok")]
    series.write_status("run", checkpoints, folder / "checkpoints.csv")
    settings = {"series": "run", "baseline": "run@1000", "baseline_rule": "first", "alpha": 0.05,
                "n_resamples": 2000, "thresholds": {}, "fail_on_regression": False}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "gate").mkdir()
    for model, value, status, code in (("run@2000", 0.31, "no significant change", 0),
                                       ("run@3000", 0.25, "regression", 1)):
        comparison = {"bench": "demo", "metric": "clip", "sampler": "dpm-solver", "steps": 20, "cfg": 4.5,
                      "baseline_value": 0.30, "candidate_value": value, "diff": value - 0.30, "ci_low": value - 0.31,
                      "ci_high": value - 0.29, "status": status}
        report = {"exit_code": code, "comparisons": [comparison], "refused": [], "candidate_model": model,
                  "baseline_model": "run@1000", "verdict": {0: "pass", 1: "REGRESSED"}[code]}
        (folder / "gate" / f"{model}.json").write_text(json.dumps(report))
    return folder, settings


def test_series_table_names_excluded_checkpoints_and_verdicts(tmp_path, results):
    from reports import series

    folder, settings = series_folder(tmp_path)
    status = series.read_status(folder / "checkpoints.csv")
    gates = series.read_gates(sorted((folder / "gate").glob("*.json")))
    md = tabular.to_markdown(tables.series_table("run", status, gates, settings))
    lines = {line.split(" |")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| baseline |" in lines["run@1000"] and "| 0.3 |" in lines["run@1000"]
    assert "| pass |" in lines["run@2000"] and "0.31 (diff +0.01 [0, 0.02], no significant change)" in lines["run@2000"]
    assert "REGRESSED: clip" in lines["run@3000"] and "REGRESSED)" in lines["run@3000"]
    assert "not evaluated: unreadable" in lines["step_2500.pth"]
    # a gate left from an earlier run against another baseline (here: the baseline itself as a candidate, its
    # values those of an old baseline) is not read, neither into its row nor into the baseline's values
    stale = {**gates["run@2000"], "candidate_model": "run@1000", "baseline_model": "run@500",
             "comparisons": [{**gates["run@2000"]["comparisons"][0], "baseline_value": 0.1}]}
    md = tabular.to_markdown(tables.series_table("run", status, {**gates, "run@1000": stale}, settings))
    assert md == tabular.to_markdown(tables.series_table("run", status, gates, settings))
    assert "Not evaluated: ck/step_2500.pth: unreadable — UnpicklingError: bad magic" in md
    table = tmp_path / "table.parquet"
    results.to_parquet(table)
    messages = []
    out = build.build(table, tmp_path / "rep", series_dirs=[folder], log=messages.append)
    assert tmp_path / "rep" / "tables" / "series__run.csv" in out["tables"]
    assert "ck/step_2500.pth: unreadable" in (tmp_path / "rep" / "README.md").read_text()
    assert any("not evaluated" in m for m in messages)
    empty = tmp_path / "empty.parquet"
    results.iloc[0:0].to_parquet(empty)
    out = build.build(empty, tmp_path / "rep2", series_dirs=[folder], log=messages.append)
    assert [p.name for p in out["tables"]] == ["series__run.md", "series__run.tex", "series__run.csv"]


def test_cli_ablation_and_train_stats(tmp_path, cli_error):
    frame, variants, stats = ablation_inputs()
    table = tmp_path / "table.parquet"
    frame.to_parquet(table)
    for model, record in stats.items():
        (tmp_path / f"{model}.json").write_text(json.dumps(record))
    argv = ["--table", str(table), "--out", str(tmp_path / "rep"), "--worst-k", "0"]
    argv += [f"--ablation={row}={model}" for row, model in variants.items()]
    argv += [f"--train-stats={m}={tmp_path / f'{m}.json'}" for m in stats if m != "abl-adaln"]
    argv += [f"--train-stats=abl-adaln={tmp_path / 'absent.json'}"]
    build.main(argv)
    md = (tmp_path / "rep" / "tables" / "ablation.md").read_text()
    assert "610,856,096" in md and "absent.json not found" in md
    assert "reports.build: error: --ablation 'adaln': expected KEY=VALUE" in cli_error(build.main,
                                                                                      argv + ["--ablation", "adaln"])


def test_a_table_that_cannot_place_its_results_does_not_stop_the_report(results, tmp_path):
    """Two benchmarks of one protocol (WISE's all and rewrite subsets) in one cell: that table says why it was
    skipped, every other table is still written."""
    wise = results[results["protocol"].str.startswith("wise@")]
    assert not wise.empty
    both = pd.concat([results, wise.assign(bench="wise_rewrite")], ignore_index=True)
    table = tmp_path / "t.parquet"
    both.to_parquet(table)
    messages = []
    out = build.build(table, tmp_path / "rep", log=messages.append)
    assert "results for one cell" in out["skipped"]["wise"]
    assert any(p.name == "table2.md" for p in out["tables"])


def test_fid_vs_clip_never_joins_two_benchmarks_of_one_protocol(results, tmp_path):
    """A 100-caption cfg sweep and the 200-caption headline cell share a protocol but not an FID bias."""
    coco = results[results["protocol"] == "coco30k@1"]
    sweep = coco[coco["cfg"] == 2.0].assign(bench="coco_sweep", n=100)
    headline = coco[coco["cfg"] == 4.5]
    with pytest.raises(NoData, match="one cfg per line"):
        figures.fid_vs_clip(pd.concat([sweep, headline]), tmp_path)


def test_a_table_without_required_or_labelling_columns_is_refused_or_named(results, tmp_path, capsys,
                                                                           cli_error):
    # a required column missing gave an empty report and exit 0; a missing prompt_limit labelled a cut run as whole
    table = tmp_path / "table.parquet"
    results.drop(columns=["value"]).to_parquet(table)
    assert "lacks the columns ['value']; it is what `python -m evals.table` writes" in cli_error(
        build.main, ["--table", str(table), "--out", str(tmp_path / "r1")])
    results.drop(columns=[c for c in ("prompt_limit", "n_prompts") if c in results]).to_parquet(table)
    build.main(["--table", str(table), "--out", str(tmp_path / "r2")])
    assert "lacks ['prompt_limit', 'n_prompts'] (written by an older evals.table?)" in capsys.readouterr().err
    assert "does not exist or is not a file" in cli_error(build.main, ["--table", str(tmp_path), "--out",
                                                                       str(tmp_path / "r3")])
