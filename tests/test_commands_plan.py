"""`microtrain plan`: search from a gain table, report a scheme's memory, clear budget errors."""
from __future__ import annotations

from fractions import Fraction as F

import pytest

from microtrain.cli import main
from microtrain.sparse.scheme import UpdateScheme
from microtrain.scheme_search.search import GainTable


def test_plan_searches_and_writes_a_scheme(mcunet, tmp_path, capsys):
    from conftest import model_path

    gains = GainTable("mcunet-5fps", 0.9, {0: 0, 6: 0.01, 12: 0.02},
                      {(i, r): 0.01 * float(r) for i in range(30, 42) for r in (F(1, 8), F(1, 2), F(1))}, 12)
    gains.save(tmp_path / "g.json")
    out = tmp_path / "s.json"
    rc = main(["plan", str(model_path("mcunet-5fps")), "--budget", "49KB", "--gains", str(tmp_path / "g.json"),
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "expected gain" in text and "extra memory" in text
    s = UpdateScheme.load(out)
    from microtrain.scheme_search.memory import MemoryModel

    assert MemoryModel(mcunet).scheme_bytes(s) <= 49 * 1024 and s.n_bias in (0, 6, 12)


def test_plan_reports_a_shipped_scheme(capsys):
    from conftest import model_path

    assert main(["plan", str(model_path("mcunet-5fps")), "--scheme", "mcunet-5fps-99kb"]) == 0
    assert "99.8 KB" in capsys.readouterr().out


@pytest.mark.parametrize("budget,message,status", [("100B", "needs 160 B", 1), ("5GB", "unknown unit", 2)])
def test_plan_budget_errors(budget, message, status, capsys):
    """Below the head's minimum: "nothing fits" before any analysis (status 1); a bad unit: a usage error (2)."""
    from conftest import model_path

    try:
        code = main(["plan", str(model_path("mcunet-5fps")), "--budget", budget, "--data", "/nonexistent"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == status and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [None, "{}", '{"format": "microtrain-gains", "model": "mbv2-w0.35"}'])
def test_plan_reads_the_gain_table_before_deciding_nothing_fits(content, tmp_path, capsys):
    """A --gains file that is missing, malformed or measured on another model is refused in one line (naming
    it), also at a budget where nothing fits and no table is needed, not silently ignored."""
    from conftest import model_path

    gains = tmp_path / "gains.json"
    if content is not None:
        gains.write_text(content)
    code = main(["plan", str(model_path("mcunet-5fps")), "--budget", "1KB", "--gains", str(gains),
                 "--out", str(tmp_path / "s.json")])
    captured = capsys.readouterr()
    assert code == 1 and "nothing fits" not in captured.out and not (tmp_path / "s.json").exists()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "gains.json" in err[0], err
