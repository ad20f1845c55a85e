"""The flash store's format, validation, rate-limit policy and C hygiene (strict warnings, ASan/UBSan)."""
from __future__ import annotations

import shutil
import subprocess
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from microtrain import persist
from microtrain.persist import (EINVAL, ELAYOUT, EMPTY, ETOOBIG, EWORN, OK, SKIPPED, FlashImageError, PersistLib,
                                newest_slot)

PAGE, SLOT = 512, 2048


@pytest.fixture(scope="module")
def lib():
    return PersistLib()


def fresh(lib, layout=1, prog_unit=1, **policy):
    lib.new_flash(2 * SLOT, PAGE, prog_unit)
    st = lib.store(SLOT, layout, **policy)
    assert lib.init(st) == OK
    return st


def reboot(lib, layout=1, now=0, **policy):
    st = lib.store(SLOT, layout, **policy)
    assert lib.init(st, now) == OK
    return st


def test_crc_matches_zlib(lib):
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 64, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert lib.crc32(data) == zlib.crc32(data)
        assert lib.crc32(data[n // 2:], lib.crc32(data[: n // 2])) == zlib.crc32(data)  # chaining


def test_corrupted_newest_slot_falls_back_to_the_older_one(lib):
    st = fresh(lib)
    assert lib.save(st, b"A" * 900) == OK and lib.save(st, b"B" * 900) == OK
    newest = st.newest_slot
    lib.memory()[newest * SLOT + persist.HEADER_SIZE + 500] ^= 0x10  # one bit flips in the payload
    st = reboot(lib)
    assert st.rejected_slots == 1 and st.newest_slot == 1 - newest
    assert lib.load(st, SLOT) == (OK, b"A" * 900)
    assert newest_slot(lib.memory().tobytes(), SLOT).payload == b"A" * 900
    # both corrupted: nothing valid, a clear outcome (and the reader names both reasons)
    lib.memory()[(1 - newest) * SLOT + 3] ^= 0xFF
    st = reboot(lib)
    assert lib.load(st, SLOT) == (EMPTY, b"")
    with pytest.raises(FlashImageError, match="slot 0: .*slot 1: "):
        newest_slot(lib.memory().tobytes(), SLOT)


def test_foreign_layout_is_refused(lib):
    st = fresh(lib, layout=1)
    assert lib.save(st, b"x" * 10) == OK
    st = reboot(lib, layout=2)
    assert lib.load(st, SLOT) == (ELAYOUT, b"")
    with pytest.raises(FlashImageError, match="layout id"):
        newest_slot(lib.memory().tobytes(), SLOT, layout_id=2)
    # a save under the new layout continues the lifetime save counter and is the one loaded
    assert lib.save(st, b"y" * 10) == OK and st.seq == 2
    assert lib.load(reboot(lib, layout=2), SLOT) == (OK, b"y" * 10)


def test_size_and_configuration_errors(lib):
    st = fresh(lib)
    cap = lib.capacity(st)
    assert cap == SLOT - persist.HEADER_SIZE
    assert lib.save(st, b"z" * (cap + 1)) == ETOOBIG
    assert lib.save(st, b"z" * cap) == OK
    assert lib.load(st, cap - 1)[0] == ETOOBIG
    assert lib.load(st, cap) == (OK, b"z" * cap)
    uninitialised = lib.store(SLOT, 1)  # saving before init could overwrite the newest slot: refused
    assert lib.save(uninitialised, b"q") == EINVAL and lib.load(uninitialised, SLOT)[0] == EINVAL
    assert not lib.due(uninitialised, 10**6, 10**6)
    for bad in (dict(slot_size=SLOT + 1), dict(slot_size=persist.HEADER_SIZE), dict(base=3)):
        b = lib.store(bad.get("slot_size", SLOT), base=bad.get("base", 0))
        assert lib.init(b) == EINVAL and lib.save(b, b"q") == EINVAL and lib.capacity(b) == 0


@pytest.mark.parametrize("prog_unit", [2, 4, 16, 32])
def test_program_granularity(lib, prog_unit):
    """The simulator refuses unaligned programs, so odd payload sizes exercise the padded tail."""
    st = fresh(lib, prog_unit=prog_unit)
    for n in (0, 1, 33, 1001):
        assert lib.save(st, bytes(range(256)) * (n // 256) + bytes(n % 256)) == OK
        assert lib.load(reboot(lib), SLOT)[1] == bytes(range(256)) * (n // 256) + bytes(n % 256)


def test_python_image_writer_and_c_loader_agree(lib):
    """A host-built image (e.g. initial parameters to flash) loads in C; a C-written slot is byte-identical."""
    payload = bytes(range(256)) * 3 + b"tail"
    image = persist.build_image(payload, SLOT, layout_id=1, step=77, seq=5)
    fresh(lib)
    lib.memory()[:] = np.frombuffer(image, np.uint8)
    st = reboot(lib)
    assert (st.seq, st.last_step, st.newest_slot) == (5, 77, 0) and lib.load(st, SLOT) == (OK, payload)
    assert lib.save(st, payload, step=78) == OK  # seq 6 goes to slot 1, bytes as the Python writer makes them
    mem = lib.memory().tobytes()
    expect = persist.slot_bytes(payload, 6, 1, 78)
    assert mem[SLOT:SLOT + len(expect)] == expect
    with pytest.raises(FlashImageError, match="does not fit"):
        persist.build_image(bytes(SLOT), SLOT)


def test_c_layout_defines_compile_and_match_the_python_layout(tmp_path):
    layout = [("classifier.weight", "int8", (4, 8, 1, 1)), ("classifier.bias", "int32", (4,)),
              ("blocks.1.depthwise.bias", "int32", (3,)), ("first_conv.weight", "int8", (3, 3, 1, 1))]
    text = persist.c_layout(layout, "NET")
    assert f"#define NET_LAYOUT_ID 0x{persist.layout_id(layout):08x}u" in text
    assert "#define NET_CLASSIFIER_BIAS_OFFSET 32u" in text and "#define NET_PAYLOAD_SIZE 72u" in text
    assert "#define NET_FIRST_CONV_WEIGHT_OFFSET 60u" in text  # 32 + 16 + 12: every array 4-byte aligned
    (tmp_path / "layout.h").write_text(text)
    (tmp_path / "use.c").write_text('#include "layout.h"\n#include "mt_persist.h"\n'
                                    "static unsigned char payload[NET_PAYLOAD_SIZE];\n"
                                    "int check(void) { return NET_FIRST_CONV_WEIGHT_OFFSET + NET_FIRST_CONV_WEIGHT_BYTES"
                                    " <= sizeof payload && NET_LAYOUT_ID != 0u; }\n")
    res = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{persist.KERNELS}", "-c",
                          str(tmp_path / "use.c"), "-o", str(tmp_path / "use.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with pytest.raises(FlashImageError, match="same C name"):
        persist.c_layout([("a.b", "int8", (1,)), ("a_b", "int8", (1,))])


def test_seq_wraps_around(lib):
    st = fresh(lib)
    st.seq = 0xFFFFFFFE
    assert lib.save(st, b"old") == OK and lib.save(st, b"new") == OK and st.seq == 0
    assert lib.load(reboot(lib), SLOT) == (OK, b"new")
    assert newest_slot(lib.memory().tobytes(), SLOT).payload == b"new"


def test_rate_limit_policy(lib):
    st = fresh(lib, min_steps=100, min_seconds=60)
    p = b"p" * 64
    assert lib.save_if_due(st, p, step=50, now=1000) == SKIPPED  # too few steps and too soon after boot
    assert lib.save_if_due(st, p, step=100, now=59) == SKIPPED  # steps ok, time not
    assert lib.save_if_due(st, p, step=100, now=60) == OK
    assert lib.save_if_due(st, p, step=150, now=500) == SKIPPED  # 50 steps since the last save
    assert lib.save_if_due(st, p, step=200, now=100) == SKIPPED  # 40 s since the last save
    assert lib.save_if_due(st, p, step=200, now=120) == OK
    # a reboot restores the last step from flash and restarts the clock: a reboot loop cannot wear the flash
    st = reboot(lib, now=5, min_steps=100, min_seconds=60)
    assert st.last_step == 200
    assert not lib.due(st, 400, 64) and lib.due(st, 400, 65) and not lib.due(st, 299, 1000)
    assert lib.due(st, 100, 65)  # a step counter restarted at 0 counts steps since boot


def test_lifetime_save_budget_survives_reboots(lib):
    st = fresh(lib, max_saves=5)
    for i in range(5):
        assert lib.save(st, bytes([i]) * 8) == OK
    assert lib.save(st, b"!" * 8) == EWORN
    st = reboot(lib, max_saves=5)
    assert lib.save_if_due(st, b"!" * 8, step=10**6, now=10**6) == EWORN
    assert lib.load(st, SLOT) == (OK, bytes([4]) * 8)  # the last good version is still there


def test_wear_is_spread_and_only_needed_pages_are_erased(lib):
    st = fresh(lib)
    for i in range(200):
        assert lib.save(st, bytes([i % 256]) * 700) == OK  # header + 700 bytes = 2 of the 4 pages of a slot
    pages = [lib.erase_count(i) for i in range(2 * SLOT // PAGE)]
    assert pages == [100, 100, 0, 0, 100, 100, 0, 0]


@given(st_.binary(min_size=0, max_size=2 * SLOT + 40))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_reader_on_garbage_raises_only_flash_image_errors(image):
    try:
        s = newest_slot(image, SLOT)
    except FlashImageError:
        return
    assert len(s.payload) <= SLOT - persist.HEADER_SIZE


def test_reader_and_loader_agree_on_corrupted_headers(lib):
    """Random byte damage in the headers: C loader and Python reader pick the same payload (or none)."""
    rng = np.random.default_rng(1)
    for trial in range(300):
        st = fresh(lib)
        for i in range(3):
            lib.save(st, bytes([trial % 256, i]) * 50)
        mem = lib.memory()
        for _ in range(int(rng.integers(1, 4))):
            mem[int(rng.integers(0, 2)) * SLOT + int(rng.integers(0, persist.HEADER_SIZE + 4))] = rng.integers(0, 256)
        rc, data = lib.load(reboot(lib), SLOT)
        try:
            py = newest_slot(mem.tobytes(), SLOT, layout_id=1).payload
        except FlashImageError:
            py = None
        assert (data if rc == OK else None) == py, trial


# ----- C hygiene ---------------------------------------------------------------------------------------------
SRC = persist.C_SOURCE


@pytest.mark.parametrize("defines", [[], ["-DMT_PERSIST_HOST_SIM"]])
def test_compiles_cleanly_as_strict_c99(tmp_path, defines):
    res = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-Wshadow",
                          *defines, "-c", str(SRC), "-o", str(tmp_path / "p.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_compiles_for_cortex_m(tmp_path):
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc not installed")
    res = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb", "-Os", "-c",
                          str(SRC), "-o", str(tmp_path / "p.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


DRIVER = r"""
#include "mt_persist.h"
#include <stdio.h>
#include <string.h>
#define SLOT 2048u
#define CHECK(c) do { if (!(c)) { printf("FAIL line %d: %s\n", __LINE__, #c); return 1; } } while (0)
static uint8_t a[1500], b[1500], c[1500], out[SLOT], before[2 * SLOT];
static mt_persist_t mk(void) { mt_persist_t p; memset(&p, 0, sizeof p); p.flash = NULL; p.slot_size = SLOT; p.layout_id = 9; return p; }
static int boot(mt_persist_t *p, const mt_flash_t *f, uint32_t *len) {
    *p = mk(); p->flash = f; mt_sim_cut(-1, -1, 0);
    if (mt_persist_init(p, 0) != MT_PERSIST_OK) return -100;
    return mt_persist_load(p, out, sizeof out, len);
}
int main(void) {
    uint32_t i, k, len, unit;
    mt_persist_t p;
    for (i = 0; i < sizeof a; i++) { a[i] = (uint8_t)(i * 7u); b[i] = (uint8_t)(i * 13u + 1u); c[i] = (uint8_t)(i ^ 0x5Au); }
    for (unit = 1; unit <= 32; unit *= 2) {
        const mt_flash_t *f = mt_sim_flash(2 * SLOT, 512, unit);
        uint32_t total = (uint32_t)(sizeof c + unit - 1) / unit * unit + MT_PERSIST_HEADER_SIZE;
        CHECK(f != NULL);
        CHECK(boot(&p, f, &len) == MT_PERSIST_EMPTY);
        CHECK(mt_persist_save(&p, a, sizeof a, 1, 0) == 0 && mt_persist_save(&p, b, sizeof b, 2, 0) == 0);
        memcpy(before, mt_sim_memory(), sizeof before);
        for (k = 0; k <= total; k++) {                      /* power cut at every programmed byte */
            int rc;
            memcpy(mt_sim_memory(), before, sizeof before);
            CHECK(boot(&p, f, &len) == 0);
            mt_sim_cut((int64_t)k, -1, (int)(k & 1u));
            rc = mt_persist_save(&p, c, sizeof c, 3, 0);
            CHECK(boot(&p, f, &len) == 0 && len == sizeof c);
            CHECK(memcmp(out, rc == 0 ? c : b, sizeof c) == 0);
        }
        for (k = 0; k < (sizeof c + MT_PERSIST_HEADER_SIZE + 511u) / 512u * 512u; k++) { /* cut during the erases */
            memcpy(mt_sim_memory(), before, sizeof before);
            CHECK(boot(&p, f, &len) == 0);
            mt_sim_cut(-1, (int64_t)k, (int)(k & 1u));       /* odd k: the cut page is left as noise */
            mt_persist_save(&p, c, sizeof c, 3, 0);
            CHECK(boot(&p, f, &len) == 0 && memcmp(out, b, sizeof b) == 0);
        }
    }
    /* garbage flash: random headers with huge lengths must be rejected without reading out of bounds */
    {
        const mt_flash_t *f = mt_sim_flash(2 * SLOT, 512, 1);
        uint32_t seed = 1u, t;
        for (t = 0; t < 2000; t++) {
            uint8_t *m = mt_sim_memory();
            for (i = 0; i < 2 * SLOT; i++) { seed = seed * 1103515245u + 12345u; m[i] = (uint8_t)(seed >> 16); }
            if (t & 1u) { m[0] = 0x4D; m[1] = 0x54; m[2] = 0x50; m[3] = 0x31; m[28] = 0x4D; m[29] = 0x54; m[30] = 0x4F; m[31] = 0x4B;
                          m[4] = 1; m[5] = 0; m[6] = 32; m[7] = 0; }
            (void)boot(&p, f, &len);
            CHECK(len <= sizeof out);
        }
        p = mk(); CHECK(mt_persist_init(&p, 0) == MT_PERSIST_EINVAL && mt_persist_load(&p, out, 1, &len) == MT_PERSIST_EINVAL);
        p.flash = f; CHECK(mt_persist_load(&p, NULL, 5, &len) == MT_PERSIST_EINVAL);
    }
    printf("ok\n");
    return 0;
}
"""


def test_asan_ubsan_fault_sweep(tmp_path):
    """Every-offset power cuts for every program granularity, plus garbage flash, under ASan and UBSan."""
    (tmp_path / "driver.c").write_text(DRIVER)
    exe = tmp_path / "driver"
    res = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fsanitize=address,undefined",
                          "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-DMT_PERSIST_HOST_SIM",
                          f"-I{persist.KERNELS}", str(tmp_path / "driver.c"), str(SRC), "-o", str(exe)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
