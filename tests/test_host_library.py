"""cache.host_shared_library: the one build rule for the host-compiled helpers (QEMU plugin, simulation loops)."""
import ctypes

from microtrain.cache import host_shared_library


def test_builds_once_per_source_and_reuses(tmp_path):
    src = tmp_path / "twice.c"
    src.write_text("int twice(int x) { return 2 * x; }\n")
    lib, why = host_shared_library("libtwice", src, cache_dir=tmp_path / "cache")
    assert why == "" and ctypes.CDLL(str(lib)).twice(21) == 42
    stamp = lib.stat().st_mtime_ns
    again, _ = host_shared_library("libtwice", src, cache_dir=tmp_path / "cache")
    assert again == lib and lib.stat().st_mtime_ns == stamp  # reused, not rebuilt
    src.write_text("int twice(int x) { return x + x + 1; }\n")
    edited, _ = host_shared_library("libtwice", src, cache_dir=tmp_path / "cache")
    assert edited != lib and ctypes.CDLL(str(edited)).twice(21) == 43  # an edit gets its own library


def test_falls_back_through_flag_choices_and_says_why(tmp_path):
    src = tmp_path / "ok.c"
    src.write_text("int one(void) { return 1; }\n")
    lib, why = host_shared_library("libok", src, flag_choices=(["-fno-such-flag-xyz"], ["-O1"]),
                                   cache_dir=tmp_path / "cache")
    assert lib is not None and why == ""
    bad = tmp_path / "bad.c"
    bad.write_text("int broken(void) { return }\n")
    lib, why = host_shared_library("libbad", bad, cache_dir=tmp_path / "cache")
    assert lib is None and str(bad) in why and "error" in why
    assert not list((tmp_path / "cache").glob("libbad*"))  # no half-written library left behind


def test_a_built_library_is_reused_without_a_compiler(tmp_path, monkeypatch):
    src = tmp_path / "one.c"
    src.write_text("int one(void) { return 1; }\n")
    lib, _ = host_shared_library("libone", src, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no gcc, no cc
    assert host_shared_library("libone", src, cache_dir=tmp_path / "cache") == (lib, "")
    src.write_text("int one(void) { return 2; }\n")
    lib2, why = host_shared_library("libone", src, cache_dir=tmp_path / "cache")
    assert lib2 is None and "no host C compiler" in why
