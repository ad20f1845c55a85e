"""Every verb in microtrain/commands/ driven with invalid arguments (each typed option with values no type
accepts, each choice with a value outside it, unknown options, missing and malformed inputs): each run ends
in one error line and a non-zero status, before any heavy work, and changes no file (the working folder is
snapshotted before and after)."""
from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from conftest import REPO
from microtrain.cli import VERBS, build_parser, main

# required arguments of each verb, all pointing at inputs that do not exist: if a fuzzed value were
# accepted, the run would still stop at once at the missing input (and never start real work)
BASE = {
    "demo": [],
    "info": ["no-model"],
    "predict": ["no-model", "no-image.png"],
    "train": ["no-model", "--data", "no-data"],
    "plan": ["no-model", "--budget", "1KB"],
    "compile": ["no-model", "--scheme", "none", "--out", "proj"],
    "run": ["no-project", "--data", "no-data"],
    "export": ["no-trained.json", "--tflite", "out.tflite"],
    "bench": None,  # any valid invocation would run the benchmarks: only argument errors are fuzzed
    "fleet": ["no-model", "--data", "no-data", "--clients", "2", "--rounds", "1", "--scheme", "mcunet-5fps-49kb"],
}
BAD_VALUES = ("abc", "nan", "inf", "-5", "1e999", "")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_module_is_a_verb():
    modules = {p.stem for p in (REPO / "src" / "microtrain" / "commands").glob("*.py") if p.stem != "__init__"}
    assert modules == set(VERBS) == set(subparsers()) == set(BASE)


def fuzz_cases() -> list[list[str]]:
    cases = []
    for verb, parser in subparsers().items():
        base = BASE[verb] or []
        cases.append([verb, *base, "--no-such-option"])
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            flag = action.option_strings[-1]
            if action.choices:
                cases.append([verb, *base, flag, "no-such-choice"])
            elif action.type not in (None, str, Path):
                cases += [[verb, *base, flag, value] for value in BAD_VALUES]
        if BASE[verb] is not None and any(a.required for a in parser._actions if a.option_strings):
            cases.append([verb, *base[:1]])  # a required option missing
    return cases


def malformed_input_cases(tmp: Path) -> list[list[str]]:
    junk = tmp / "junk.pkl"
    junk.write_bytes(b"\x80\x04not a pickle")
    (tmp / "junk.json").write_text("{not json")
    (tmp / "no-classes").mkdir()
    return [
        ["info", junk], ["predict", junk, junk], ["train", junk, "--data", tmp / "no-classes"],
        ["plan", junk, "--scheme", tmp / "junk.json"], ["compile", junk, "--scheme", "none", "--out", tmp / "p"],
        ["run", tmp / "no-classes", "--data", tmp / "no-classes"], ["info", tmp / "junk.json"],
        ["export", tmp / "junk.json", "--tflite", tmp / "o.tflite"], ["export", junk, "--tflite", tmp / "o.tflite"],
        ["export", junk, "--project", tmp / "no-classes", "--tflite", tmp / "o.tflite"],
        ["fleet", junk, "--data", tmp / "no-classes", "--clients", "2", "--rounds", "1", "--scheme", tmp / "junk.json"],
    ]


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_invalid_arguments_give_one_error_line_and_change_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MICROTRAIN_CACHE", str(tmp_path / "cache"))
    cases = fuzz_cases() + malformed_input_cases(tmp_path)
    assert len(cases) > 100
    before = snapshot(tmp_path)
    bad = []
    for argv in cases:
        code, err = run_cli(argv)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if code in (0, None) or len(lines) != 1 or "error" not in lines[0] or "Traceback" in err:
            bad.append((argv, code, err[-300:]))
    assert not bad, bad[:5]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("verb", [v for v in BASE if BASE[v] is not None])
def test_each_verb_names_the_bad_value(verb):
    """The message names the option and the value at fault (not argparse's 'expected one argument')."""
    parser = subparsers()[verb]
    typed = [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.type not in (None, str, Path)
             and not a.choices]
    for action in typed:
        flag = action.option_strings[-1]
        code, err = run_cli([verb, *BASE[verb], flag, "-5"])
        assert code == 2 and flag in err and "-5" in err and "expected one argument" not in err, (flag, err)
