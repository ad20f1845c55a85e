"""Nothing lost, nothing silent (issue 19): every command checks its arguments and its outputs before any
work, never deletes or silently replaces a file it did not write, refuses bad schemes and data with a
one-line error, and carries the class names from the data through plan -> compile -> run -> predict."""
from __future__ import annotations

import json
import os
import struct
import sys
import warnings
import zlib
from pathlib import Path

import pytest

from conftest import REPO, SHARED, model_path, tiny_hymenoptera
from microtrain.cli import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    """(status, stdout, stderr) of `microtrain argv...`; usage errors (SystemExit) count as a status."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """train/{ants,bees} 4 images each, val/ 2 each (symlinks into hymenoptera_data)."""
    return tiny_hymenoptera(tmp_path_factory.mktemp("tiny"), 4, 2)


def train_args(tiny, tmp_path, *extra):
    return ["train", model_path("mcunet-5fps"), "--data", tiny, "--epochs", "1", "--views", "1",
            "--resolution", "48", "--batch-size", "4", "--update", "head", "--quiet",
            "--metrics", tmp_path / "m.json", *extra]


# ----- data loss ------------------------------------------------------------------------------------------
def test_checkpoint_never_deletes_a_users_files(tiny, tmp_path, capsys):
    ck = tmp_path / "mine"
    ck.mkdir()
    (ck / "notes.txt").write_text("my notes")
    code, _, err = cli(capsys, *train_args(tiny, tmp_path, "--checkpoint", ck))
    assert code == 1 and "--force" in one_line_error(err) and "not empty" in err
    assert not (tmp_path / "m.json").exists()  # refused before any work
    code, _, err = cli(capsys, *train_args(tiny, tmp_path, "--checkpoint", ck, "--force"))
    assert code == 0, err
    assert (ck / "notes.txt").read_text() == "my notes" and (ck / "state.json").exists()
    # a second save into the same folder keeps the user's file too
    assert cli(capsys, *train_args(tiny, tmp_path, "--checkpoint", ck, "--force"))[0] == 0
    assert sorted(p.name for p in ck.iterdir()) == ["graph.json", "graph.npz", "notes.txt", "optimizer.npz",
                                                      "state.json"]


def test_train_refuses_a_foreign_checkpoint_scratch_folder_before_work(tiny, tmp_path, capsys):
    (tmp_path / "ck.tmp").mkdir()
    (tmp_path / "ck.tmp" / "mine.txt").write_text("x")
    code, _, err = cli(capsys, *train_args(tiny, tmp_path, "--checkpoint", tmp_path / "ck"))
    assert code == 1 and "ck.tmp exists and is not a microtrain checkpoint" in one_line_error(err)
    assert not (tmp_path / "m.json").exists() and (tmp_path / "ck.tmp" / "mine.txt").exists()


def test_save_checkpoint_refuses_a_foreign_tmp_sibling(tmp_path, mcunet):
    from microtrain.runtime.checkpoint import CheckpointError, save_checkpoint

    side = tmp_path / "ck.tmp"
    side.mkdir()
    (side / "precious.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a microtrain checkpoint"):
        save_checkpoint(tmp_path / "ck", mcunet, {"epoch": 0})
    assert (side / "precious.txt").exists()


def test_compile_into_a_project_says_what_it_replaces_and_keeps_user_edits(tmp_path, capsys):
    base = ["compile", model_path("mcunet-5fps"), "--scheme", "none", "--target", "c", "--resolution", "48",
            "--classes", "2", "--timeline", "0", "--out"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "Makefile").write_text("my build\n")
    code, _, err = cli(capsys, *base, foreign)
    assert code == 1 and "not a microtrain project" in one_line_error(err)
    assert (foreign / "Makefile").read_text() == "my build\n"

    proj = tmp_path / "proj"
    assert cli(capsys, *base, proj)[0] == 0
    (proj / "README.local").write_text("kept")
    code, out, _ = cli(capsys, *base, proj)  # unedited: recompiles, and says so
    assert code == 0 and "replaced" in out and "Makefile" in out
    with open(proj / "Makefile", "a") as f:
        f.write("# my edit\n")
    code, _, err = cli(capsys, *base, proj)
    assert code == 1 and "Makefile" in one_line_error(err) and "--force" in err
    assert (proj / "Makefile").read_text().endswith("# my edit\n")
    code, out, _ = cli(capsys, *base, proj, "--force")
    assert code == 0 and "replaced your edits (--force): Makefile" in out
    assert not (proj / "Makefile").read_text().endswith("# my edit\n") and (proj / "README.local").exists()


# ----- outputs checked first ------------------------------------------------------------------------------
def output_cases(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("user data")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    m = model_path("mcunet-5fps")
    return [
        (["train", m, "--data", tmp_path, "--metrics", a_dir], "is a folder"),
        (["train", m, "--data", tmp_path, "--metrics", a_file / "m.json"], "is a file, not a folder"),
        (["train", m, "--data", tmp_path, "--metrics", a_file], "not written by microtrain"),
        (["train", m, "--data", tmp_path, "--save", a_dir], "must end in .json"),
        (["train", m, "--data", tmp_path, "--save", a_file / "g.json"], "is a file, not a folder"),
        (["train", m, "--data", tmp_path, "--checkpoint", a_file], "is a file, expected a folder"),
        (["plan", m, "--budget", "50KB", "--out", a_dir], "is a folder"),
        (["plan", m, "--budget", "50KB", "--out", a_file], "not written by microtrain"),
        (["plan", m, "--budget", "50KB", "--data", tmp_path, "--cache", a_file], "is a file"),
        (["compile", m, "--scheme", "none", "--out", a_file], "is a file, expected a folder"),
        (["compile", m, "--scheme", "none", "--out", tmp_path / "new", "--report-json", a_dir], "is a folder"),
        (["run", tmp_path, "--data", tmp_path, "--params-out", a_file], "not written by microtrain"),
    ]


def test_every_output_path_is_checked_before_any_work(tmp_path, capsys):
    for argv, message in output_cases(tmp_path):
        before = snapshot(tmp_path)
        code, out, err = cli(capsys, *argv)
        assert code == 1 and message in one_line_error(err), (argv, err)
        assert snapshot(tmp_path) == before, argv


def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores the mode bits: let os.access report the folder as read-only
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    for argv in (["plan", model_path("mcunet-5fps"), "--budget", "50KB", "--out", ro / "s.json"],
                 ["compile", model_path("mcunet-5fps"), "--scheme", "none", "--out", ro / "proj"],
                 ["train", model_path("mcunet-5fps"), "--data", tmp_path, "--metrics", ro / "m.json"]):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and "not writable" in one_line_error(err), (argv, err)


def test_missing_parents_are_created(tiny, tmp_path, capsys):
    deep = tmp_path / "a" / "b"
    code, _, err = cli(capsys, *train_args(tiny, tmp_path, "--save", deep / "g.json"))[:3]
    assert code == 0, err
    assert (deep / "g.json").exists() and (deep / "g.npz").exists()


# ----- silent acceptance ----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,flag", [
    (["run", "proj", "--data", "d", "--steps", "-1"], "--steps"),
    (["run", "proj", "--data", "d", "--eval", "-2"], "--eval"),
    (["compile", "m", "--scheme", "none", "--out", "o", "--classes", "0"], "--classes"),
    (["compile", "m", "--scheme", "none", "--out", "o", "--lr", "-1"], "--lr"),
    (["compile", "m", "--scheme", "none", "--out", "o", "--resolution", "0"], "--resolution"),
    (["train", "m", "--data", "d", "--lr", "nan"], "--lr"),
    (["train", "m", "--data", "d", "--momentum", "1.5"], "--momentum"),
    (["train", "m", "--data", "d", "--resolution", "0"], "--resolution"),
    (["plan", "m", "--budget", "-5KB"], "--budget"),
    (["plan", "m", "--budget=-5KB"], "--budget"),
    (["plan", "m", "--budget", "0"], "--budget"),
    (["plan", "m", "--budget", "5", "--workers", "0"], "--workers"),
    (["predict", "m", "x.png", "--top", "0"], "--top"),
    (["demo", "--budget", "-1KB"], "--budget"),
    (["demo", "--seed", "-3"], "--seed"),
])
def test_numeric_arguments_are_validated(argv, flag, capsys):
    code, _, err = cli(capsys, *argv)
    line = one_line_error(err)
    assert code == 2 and flag in line and "expected one argument" not in line, line


def write_scheme(path, **d):
    path.write_text(json.dumps({"format": "microtrain-scheme", **d}))
    return path


@pytest.mark.parametrize("doc,message", [
    ({"weights": {}}, "missing key n_bias"),
    ({"n_bias": 2}, "missing key weights"),
    ({"nbias": 2, "n_bias": 2, "weights": {}}, "unknown key 'nbias' (did you mean 'n_bias'?)"),
    ({"n_bias": 2, "weights": {"41": "1/2"}, "fingerprint": "0c1ad7c77f49e47e", "model": "mbv2-w0.35"},
     "made for mbv2-w0.35"),
    ({"n_bias": 2, "weights": {"41": "1"}, "layers": {"41": "blocks.12.pointwise2"}}, "'blocks.12.pointwise2' in the scheme"),
    ({"n_bias": 2, "weights": {"blocks.13.pointwsie2": "1"}}, "did you mean 'blocks.13.pointwise2'"),
])
def test_schemes_are_validated_strictly(doc, message, tmp_path, capsys):
    path = write_scheme(tmp_path / "s.json", **doc)
    code, _, err = cli(capsys, "plan", model_path("mcunet-5fps"), "--scheme", path)
    assert code == 1 and message in one_line_error(err)


def test_shipped_scheme_is_refused_on_another_model(capsys):
    code, _, err = cli(capsys, "plan", model_path("mbv2-w0.35"), "--scheme", "mcunet-5fps-49kb")
    assert code == 1 and "made for mcunet-5fps" in one_line_error(err)


def test_scheme_weights_by_layer_name(mcunet):
    from microtrain.sparse.scheme import UpdateScheme

    s = UpdateScheme.from_dict({"format": "microtrain-scheme", "n_bias": 2, "weights": {"blocks.13.pointwise2": "1/2"}})
    assert s.validate(mcunet).weights == {41: 0.5}


def test_empty_class_folder_is_an_error(tmp_path, tiny):
    from microtrain.errors import DatasetError
    from microtrain.runtime.datasets import load_image_folder

    root = tmp_path / "train"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in (tiny / "train" / cls).iterdir():
            (root / cls / f.name).symlink_to(f.resolve())
    (root / "wasps").mkdir()
    with pytest.raises(DatasetError, match="empty class folder .*wasps"):
        load_image_folder(root, 32)
    (root / "wasps" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no readable JPEG/PNG image in class folder .*wasps"):
        load_image_folder(root, 32)


def test_run_keeps_its_step_count_despite_undecodable_images(tmp_path, tiny):
    from microtrain.targets.cortex_m.data import session_data

    root = tmp_path / "ds"
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for f in (tiny / split / cls).iterdir():
                (root / split / cls / f.name).symlink_to(f.resolve())
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "train" / "bees" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (x, y), _, classes, skipped = session_data(root, 32, 2, 30, 2, seed=0)
    assert len(x) == len(y) == 30 and classes == ["ants", "bees"]
    assert sorted(Path(p).name for p, _ in skipped) == ["broken.jpg", "broken.png"]  # each reported once


def huge_png(path: Path, w: int = 12000, h: int = 12000) -> Path:
    """A PNG whose header claims w x h pixels (the pixel data is a stub: only the header is read)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_image_is_a_one_line_error_without_pil_warning(tmp_path, capsys):
    from microtrain.errors import DatasetError
    from microtrain.runtime.datasets import decode_checked
    from microtrain.runtime.images import decode_rgb

    big = huge_png(tmp_path / "big.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError, match="too large: 12000x12000"):
            decode_rgb(big)
        im, reason = decode_checked(big)
        code, _, err = cli(capsys, "predict", model_path("mcunet-5fps"), big)
    assert not caught, [str(w.message) for w in caught]
    assert im is None and "too large" in reason
    assert code == 1 and "too large" in err and "DecompressionBomb" not in err


def test_plan_says_nothing_fits(tiny, tmp_path, capsys):
    cache = tmp_path / "cache"
    code, _, err = cli(capsys, "plan", model_path("mcunet-5fps"), "--data", tiny, "--budget", "100B", "--cache", cache)
    assert code == 1 and "nothing fits" in one_line_error(err) and "160 B" in err
    code, out, _ = cli(capsys, "plan", model_path("mcunet-5fps"), "--data", tiny, "--budget", "200B",
                       "--cache", cache, "--out", tmp_path / "s.json")
    assert code == 0 and "nothing fits in 200 B beyond the always-trained classifier" in out
    assert not cache.exists()  # no contribution analysis ran
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["n_bias"] == 0 and s["weights"] == {} and s["classes"] == ["ants", "bees"]
    assert s["model"] == "mcunet-5fps" and s["fingerprint"]


# ----- classes flow through -------------------------------------------------------------------------------
def test_compile_takes_the_class_count_from_the_scheme(tmp_path, capsys):
    from microtrain.cli_checks import read_project_marker

    scheme = write_scheme(tmp_path / "s.json", n_bias=2, weights={}, classes=["ants", "bees"], model="mcunet-5fps")
    code, out, err = cli(capsys, "compile", model_path("mcunet-5fps"), "--scheme", scheme, "--target", "c",
                         "--resolution", "48", "--timeline", "0", "--out", tmp_path / "p")
    assert code == 0, err
    assert "#define MT_NUM_CLASSES 2" in (tmp_path / "p" / "mt_model.h").read_text()
    assert read_project_marker(tmp_path / "p")["classes"] == ["ants", "bees"]


def test_run_refuses_data_with_other_classes_than_compiled(tmp_path, tiny):
    from microtrain.commands.run import check_class_names
    from microtrain.errors import MicrotrainError

    (tmp_path / ".microtrain-project.json").write_text(json.dumps(
        {"format": "microtrain-project", "files": {}, "classes": ["bees", "ants"]}))
    with pytest.raises(MicrotrainError, match="compiled for the classes bees, ants"):
        check_class_names(tmp_path, ["ants", "bees"])
    check_class_names(tmp_path, ["bees", "ants"])


def test_a_fit_failure_with_the_1000_class_head_mentions_classes():
    import argparse

    from microtrain.commands.compile import _head_hint
    from microtrain.errors import BudgetError, MicrotrainError

    class G:
        num_classes = 1000

    with pytest.raises(BudgetError, match="give --classes N"):
        with _head_hint(argparse.Namespace(classes=None), G()):
            raise MicrotrainError("firmware does not fit: SRAM 300 KB > 256 KB")
    with pytest.raises(MicrotrainError, match="^firmware does not fit"):  # --classes given: no hint
        with _head_hint(argparse.Namespace(classes=2), G()):
            raise MicrotrainError("firmware does not fit")


def test_compile_that_does_not_link_with_the_1000_class_head_mentions_classes(tmp_path, capsys):
    from cortexm_util import require_arm_tools

    require_arm_tools()
    code, _, err = cli(capsys, "compile", model_path("mcunet-5fps"), "--scheme", "mcunet-5fps-49kb", "--target",
                       "cortex-m7", "--timeline", "0", "--out", tmp_path / "p")
    assert code == 1 and "does not fit" in one_line_error(err) and "--classes N" in err


def test_trained_graph_keeps_its_class_names_for_predict(tiny, tmp_path, capsys):
    saved = tmp_path / "trained.json"
    code, _, err = cli(capsys, *train_args(tiny, tmp_path, "--save", saved))
    assert code == 0, err
    assert json.loads(saved.read_text())["meta"]["labels"] == ["ants", "bees"]
    image = next((tiny / "val" / "bees").iterdir())
    code, out, _ = cli(capsys, "predict", saved, image, "--top", "2", "--resolution", "48")
    assert code == 0 and " ants " in out and " bees " in out and "class 0" not in out


# ----- output -----------------------------------------------------------------------------------------------
class FakeTerminal:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_lines_written_during_a_bar_do_not_land_on_it(monkeypatch):
    from microtrain import progress

    monkeypatch.delenv("MICROTRAIN_PROGRESS", raising=False)
    term = FakeTerminal()
    bar = progress.Progress(10, "train", stream=term)
    bar.update(3, postfix="loss 0.5")
    progress.write("epoch 1/2: loss 0.5", stream=term)
    bar.update(7)
    bar.close()
    segments = [s.strip() for chunk in term.text.split("\n") for s in chunk.split("\r")]
    assert "epoch 1/2: loss 0.5" in segments  # on its own line, not appended to the bar's text


def test_progress_without_a_terminal_prints_plain_lines_early(monkeypatch):
    import io

    from microtrain import progress

    monkeypatch.delenv("MICROTRAIN_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "FIRST_AFTER", 0.0)
    log = io.StringIO()
    with progress.Progress(4, "loading train", stream=log) as bar:
        bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("loading train: 1/4") and "\r" not in log.getvalue()


def test_bench_quick_writes_elsewhere(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import run_all

    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    (tmp_path / "headline.md").write_text("full results\n")
    assert run_all.main(["--quick", "--skip", "memory", "host", "cortexm", "--accuracy", "skip"]) == 0
    assert (tmp_path / "headline.md").read_text() == "full results\n"
    assert (tmp_path / "quick" / "headline.md").exists() and (tmp_path / "quick" / "bench_summary.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["headline.md", "quick"]
    with pytest.raises(SystemExit):
        run_all.main(["--quick", "--update-readme", "--accuracy", "skip"])


def test_microtrain_shared_alone_finds_the_models(tmp_path, monkeypatch):
    from microtrain.models import resolve_model_path

    monkeypatch.delenv("MICROTRAIN_MODELS", raising=False)
    monkeypatch.setenv("MICROTRAIN_SHARED", str(SHARED.resolve()))
    monkeypatch.chdir(tmp_path)  # ../shared from here is not the shared folder
    assert resolve_model_path("mcunet-5fps") == SHARED.resolve() / "models" / "mcunet-5fps.pkl"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_demo_refuses_a_foreign_output_folder(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "thesis.tex").write_text("mine")
    code, _, err = cli(capsys, "demo", "--out", tmp_path)
    assert code == 1 and "not a microtrain demo output" in one_line_error(err)
    assert (tmp_path / "results.json").read_text() == "{}"
