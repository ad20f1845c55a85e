"""run_all / `microtrain bench`: the orchestration writes the expected files and keys (accuracy step only,
reusing a result file, into a scratch results folder), and the verb is wired to the script."""
from __future__ import annotations

import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def test_run_all_writes_summary_headline_and_accuracy(tmp_path, monkeypatch):
    import run_all

    (tmp_path / "qas.json").write_text(json.dumps({"models": {}, "average": {}}))
    (tmp_path / "qas.md").write_text("| model | fp32 |\n|---|---|\n| m | 90.0 |\n")
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    assert run_all.main(["--skip", "memory", "host", "cortexm", "patching", "--accuracy", "reuse"]) == 0
    summary = json.loads((tmp_path / "bench_summary.json").read_text())
    assert {"date", "command", "quick", "step_seconds", "total_seconds", "sources"} <= set(summary)
    assert summary["step_seconds"]["memory"] == "skipped"
    acc = json.loads((tmp_path / "bench_accuracy.json").read_text())
    assert acc["qas"]["source"].startswith("reused")  # never presented as measured now
    assert "missing" in acc["sparse"]["source"] or "failed" in acc["sparse"]["source"]
    head = (tmp_path / "headline.md").read_text()
    assert "| m | 90.0 |" in head and "reused" in head


def test_freshness_compares_result_with_code(tmp_path, monkeypatch):
    import os
    import run_all

    code = tmp_path / "code.py"
    code.write_text("x = 1\n")
    result = tmp_path / "r.json"
    result.write_text("{}")
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    os.utime(code, (1000, 1000))
    os.utime(result, (2000, 2000))
    assert run_all._freshness(result, ["code.py"])[0]
    os.utime(code, (3000, 3000))
    fresh, why = run_all._freshness(result, ["code.py"])
    assert not fresh and "older than code.py" in why


def test_bench_verb_finds_the_script():
    from microtrain.cli import build_parser
    from microtrain.commands.bench import find_run_all

    assert find_run_all() == REPO / "benchmarks" / "run_all.py"
    args = build_parser().parse_args(["bench", "--quick", "--skip", "cortexm", "--accuracy", "reuse",
                                      "--reuse", "host"])
    assert args.quick and args.skip == ["cortexm"] and args.accuracy == "reuse" and args.reuse == ["host"]


def test_reduced_qas_tables_merge_with_a_recomputed_average():
    import run_all

    one = ["| model | fp32 | int8 |", "|---|---|---|", "| a | 90.0 ± 1.0 [0.1] | 80.0 ± 0.0 [1] |",
           "| **average** | **90.0** | **80.0** |"]
    two = ["| model | fp32 | int8 |", "|---|---|---|", "| b | 93.0 ± 1.0 [0.1] | 71.0 ± 0.5 [1] |",
           "| **average** | **93.0** | **71.0** |"]
    merged = run_all._merge_qas_tables(one + two).splitlines()
    assert merged[0] == "| model | fp32 | int8 |" and len(merged) == 5
    assert merged[-1] == "| **average** | **91.5** | **75.5** |"


def test_a_failing_step_is_reported_and_the_others_still_written(tmp_path, monkeypatch):
    import run_all

    def broken(args):
        raise RuntimeError("qemu vanished")

    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(run_all, "step_host", broken)
    assert run_all.main(["--skip", "memory", "cortexm", "patching", "--accuracy", "skip"]) == 1
    summary = json.loads((tmp_path / "bench_summary.json").read_text())
    assert summary["step_seconds"]["host"].startswith("FAILED") and "qemu vanished" in summary["step_seconds"]["host"]
    assert "Step host FAILED" in (tmp_path / "headline.md").read_text()
    assert (tmp_path / "bench_accuracy.json").exists()


def test_tflite_step_copies_the_stored_tables_into_their_own_readme_block(tmp_path, monkeypatch):
    """`bench --skip memory host cortexm accuracy --update-readme`: the tflite tables come from the stored
    exp_tflite.py result (never re-run), go between the tflite markers, and the main block is left alone."""
    import run_all

    row = {"lr": 0.01, "seeds": [0, 1, 2], "val_acc": [0.8, 0.81, 0.82], "mean": 0.81, "std": 0.01,
           "firmware": {"linked_sram": 52548, "linked_flash": 106120, "instructions_per_step": 1.677e8,
                        "fits": True, "identical_to_host": True}}
    doc = {"models": {"ic_resnet8_cifar10_int8": {
        "data": "cifar10", "n_train": 1000, "n_val": 2000, "input": "32x32x3",
        "as_shipped": {"val_acc": 0.76, "correct": 1520, "n": 2000}, "searched": {"budget": "64KB"},
        "schemes": {"head": row, "searched": row, "full": dict(row, firmware=dict(row["firmware"], fits=False))}}}}
    (tmp_path / "tflite_train.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{run_all.README_BEGIN}\nold main\n{run_all.README_END}\n"
                      f"{run_all.TFLITE_MARKERS[0]}\nold\n{run_all.TFLITE_MARKERS[1]}\ntail\n")
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(run_all, "README", readme)
    monkeypatch.setattr(run_all, "_freshness", lambda path, deps: (True, f"reused {path.name}"))
    assert run_all.main(["--skip", "memory", "host", "cortexm", "patching", "accuracy", "--update-readme"]) == 0
    text = readme.read_text()
    assert run_all.readme_block(text) == "old main" and not (tmp_path / "headline.md").exists()
    block = run_all.readme_block(text, run_all.TFLITE_MARKERS)
    assert block == (tmp_path / "headline_tflite.md").read_text().strip("\n") and text.endswith("tail\n")
    assert "as shipped: **76.0 %** (1520/2000)." in block and "| head only | 81.0 ± 1.0 | 0.01 | 51.3 KB |" in block
    assert "| full (simulation) |" in block and "| no | yes |" in block


def test_update_readme_replaces_only_the_bench_block(tmp_path):
    import pytest
    import run_all

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nintro\n{run_all.README_BEGIN}\nold | 1 |\n{run_all.README_END}\n## After\nkept\n")
    run_all.update_readme("| new | 2 |\n", readme)
    text = readme.read_text()
    assert run_all.readme_block(text) == "| new | 2 |"
    assert text.startswith("# x\nintro\n") and text.endswith("## After\nkept\n") and "old" not in text
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="bench markers"):
        run_all.update_readme("| new |", readme)


def test_readme_figures_are_the_bench_headline():
    """Every figure of the README's results block is `microtrain bench --update-readme` output, unedited."""
    import run_all

    block = run_all.readme_block((REPO / "README.md").read_text())
    assert block == (REPO / "benchmarks" / "results" / "headline.md").read_text().strip("\n")
    assert "REDUCED" not in block and "stale" not in block  # the committed headline is a full, fresh run


def test_readme_tflite_tables_are_the_stored_experiment():
    """The README's tflite block is `microtrain bench` output from the stored exp_tflite.py result, unedited,
    with the three models' tables and their as-shipped accuracy."""
    import run_all

    block = run_all.readme_block((REPO / "README.md").read_text(), run_all.TFLITE_MARKERS)
    assert block == (REPO / "benchmarks" / "results" / "headline_tflite.md").read_text().strip("\n")
    assert "not shown" not in block and block.count("as shipped: **") == 3


def test_qas_section_reports_averages_collapses_and_gradient_scales():
    import run_all

    md = ("# QAS\n\n| model | fp32 | int8+QAS |\n|---|---|---|\n| m | 90.0 ± 1.0 [0.1] | 89.0 ± 0.0 [0.1] |\n\n"
          "Average differences: int8+QAS - fp32 = -1.00 points.\n")
    table = {"models": {"m": {"fp32": {"val_acc": [0.9, 0.9]}, "int8+QAS": {"val_acc": [0.89, 0.89]}}},
             "collapsed_runs": {"m|fp32": {"collapsed_seeds": [1]}, "m|int8+QAS": {"collapsed_seeds": []}},
             "gradient_scales": {"a.weight": {"fp32": 1.0, "int8": 1e-6, "int8+QAS": 1.02},
                                 "a.bias": {"fp32": 0.5, "int8": 1e-9, "int8+QAS": 0.5}}}
    lines = run_all._qas_section("**QAS**", {"source": "reused qas.json", "markdown": md, "table": table})
    text = "\n".join(lines)
    assert "| m | 90.0 ± 1.0 [0.1] |" in text and "Average differences: int8+QAS - fp32 = -1.00" in text
    assert "1 of 4" in text and "rolled a collapse back (lr / 3): 0" in text
    assert "within 2.0 % of fp32's" in text and "2.0e-09 to 1.0e-06" in text


def test_vowels_scenario_goes_into_the_headline_from_its_stored_record(tmp_path, monkeypatch):
    """The time-series table (issue 17) comes from results/vowels.json, reused and never re-run: every variant's
    row, the small-set caveat and the Cortex-M4 rows, with the stored figures; no record, no section."""
    import run_all

    rec = json.loads((REPO / "benchmarks" / "results" / "vowels.json").read_text())
    (tmp_path / "vowels.json").write_text(json.dumps(rec))
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    assert run_all.main(["--skip", "memory", "host", "cortexm", "patching", "--accuracy", "reuse"]) == 0
    head = (tmp_path / "headline.md").read_text()
    for variant, accs in rec["demo"]["adapt"]["test_acc"].items():
        assert f"| {variant} | " + " | ".join(f"{v:.1%}" for v in accs) in head
    assert "These sets are small" in head and "head only" in head and "searched" in head
    assert "Source: reused vowels.json" in head
    for key in ("portable", "cortex-m"):
        assert f"| {rec['m4'][key]['per_step']:,.0f} | {rec['m4'][key]['per_inference']:,.0f} | " in head
    assert f"linked {rec['demo']['device']['firmware_sram']:,} B" in head
    assert json.loads((tmp_path / "bench_accuracy.json").read_text())["vowels"]["source"].startswith("reused")
    (tmp_path / "vowels.json").unlink()
    assert run_all.main(["--skip", "memory", "host", "cortexm", "patching", "--accuracy", "reuse"]) == 0
    assert "Time series" not in (tmp_path / "headline.md").read_text()


def test_reused_steps_are_shown_from_their_committed_results_and_named(tmp_path, monkeypatch):
    """--reuse host: the committed bench_host_step.json is shown, not measured (the step never runs), and the
    headline says so; a missing file fails that step only."""
    import run_all

    doc = {"date": "2026-01-01T00:00:00+00:00", "source": "measured now", "results": [
        {"model": "mcunet-5fps", "scheme": "s", "opt": "-O3", "c_ms_wall": 12.5, "torch_ms_wall": 10.0,
         "ratio_wall": 1.25, "ratio_cpu": 1.2}]}
    (tmp_path / "bench_host_step.json").write_text(json.dumps(doc))
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(run_all, "step_host", lambda args: (_ for _ in ()).throw(AssertionError("measured")))
    assert run_all.main(["--skip", "memory", "cortexm", "patching", "--accuracy", "skip", "--reuse", "host"]) == 0
    head = (tmp_path / "headline.md").read_text()
    assert "| mcunet-5fps | s | 12.5 | 10.0 | 1.25x | 1.20x |" in head
    assert "except the tables of host" in head and "reused bench_host_step.json (measured 2026-01-01" in head
    assert json.loads((tmp_path / "bench_host_step.json").read_text()) == doc  # not rewritten
    (tmp_path / "bench_host_step.json").unlink()
    assert run_all.main(["--skip", "memory", "cortexm", "patching", "--accuracy", "skip", "--reuse", "host"]) == 1


def test_headline_prints_the_cycle_estimate_beside_the_instructions():
    """The Cortex-M7 row shows bench_cortexm's cycles_estimate as a labelled range next to the measured
    instructions; a result without it (an older cortexm.json) says n/a."""
    import argparse

    import run_all

    def row(model, est):
        r = dict(model=model, scheme="s", cpu="cortex-m7", kernels="cortex-m", per_step=40.2e6,
                 ratio_over_upstream_118M=40.2 / 118, step_macs={"total": 33e6}, ratio_over_lower_bound=2.44)
        return r | ({"cycles_estimate": est} if est else {})

    est = dict(low=25.46e6, high=44.01e6, table="t")
    text = run_all.headline({"cortexm": {"source": "measured now", "results": [row("a", est), row("b", None)]}},
                            argparse.Namespace(quick=False), 1.0)
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "| M7 instructions (M) | M7 cycles, estimate (M) |" in lines["| model"]
    assert lines["| a"].endswith("| 40.2 | 25.5-44.0 (est.) | 0.34x | 33.0 | 2.44x |")
    assert lines["| b"].endswith("| 40.2 | n/a | 0.34x | 33.0 | 2.44x |")
    assert "not comparable to upstream's 118 M cycles" in text
