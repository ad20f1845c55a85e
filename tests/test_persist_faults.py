"""Fault injection on the two-slot flash store: cut power at EVERY byte offset of a save (programming) and of
its erases, and check the store always recovers the last complete version, never a mix or an older one."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from microtrain import persist
from microtrain.persist import EFLASH, EMPTY, OK, PersistLib, newest_slot, pack_params, unpack_params

PAGE, SLOT = 1024, 4096
# a realistic payload: the trainable tail of a small int8 CNN (head 10x160, a pointwise conv, biases)
LAYOUT = [("classifier.weight", "int8", (10, 160, 1, 1)), ("classifier.bias", "int32", (10,)),
          ("blocks.13.pointwise2.weight", "int8", (16, 96, 1, 1)), ("blocks.13.pointwise2.bias", "int32", (16,)),
          ("blocks.12.depthwise.bias", "int32", (96,))]
LAYOUT_ID = persist.layout_id(LAYOUT)


@functools.lru_cache(maxsize=None)
def version(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arrays = {n: rng.integers(np.iinfo(d).min, np.iinfo(d).max, size=s, dtype=d, endpoint=True) for n, d, s in LAYOUT}
    return pack_params(arrays, LAYOUT)


@pytest.fixture(scope="module")
def lib():
    return PersistLib()


def fresh(lib, prog_unit=1):
    lib.new_flash(2 * SLOT, PAGE, prog_unit)
    st = lib.store(SLOT, LAYOUT_ID)
    assert lib.init(st) == OK
    return st


def boot(lib):
    """Power on, init, load: what a device sees after a reset."""
    lib.power_on()
    st = lib.store(SLOT, LAYOUT_ID)
    assert lib.init(st) == OK
    rc, data = lib.load(st, SLOT)
    return st, rc, data


def test_payload_is_realistic_and_roundtrips():
    v = version(1)
    assert 2500 < len(v) < SLOT - persist.HEADER_SIZE
    back = unpack_params(v, LAYOUT)
    assert pack_params(back, LAYOUT) == v
    assert back["classifier.bias"].dtype == np.int32 and back["classifier.weight"].shape == (10, 160, 1, 1)


def test_host_tool_extracts_the_trained_arrays(lib):
    st = fresh(lib)
    assert lib.save(st, version(1), step=5) == OK and lib.save(st, version(2), step=9) == OK
    arrays, slot = persist.read_params(lib.memory().tobytes(), SLOT, LAYOUT)
    assert slot.step == 9 and slot.seq == 2
    assert all(np.array_equal(arrays[k], v) for k, v in unpack_params(version(2), LAYOUT).items())
    with pytest.raises(persist.FlashImageError, match="layout id"):
        persist.read_params(lib.memory().tobytes(), SLOT, LAYOUT[:-1])  # another layout: refused, not misread


@pytest.mark.parametrize("prog_unit,torn", [(1, False), (1, True), (8, False)])
def test_power_cut_at_every_programmed_byte(lib, prog_unit, torn):
    a, b, c = version(1), version(2), version(3)
    st = fresh(lib, prog_unit)
    assert lib.save(st, a, step=10) == OK and lib.save(st, b, step=20) == OK  # slot0 = A (older), slot1 = B
    before = lib.memory().copy()
    padded = -(-len(c) // prog_unit) * prog_unit
    total = padded + persist.HEADER_SIZE  # bytes one save programs
    outcomes = {"B": 0, "C": 0}
    for k in range(total + 1):  # k = bytes programmed before the power dies; k == total: save completes
        lib.memory()[:] = before
        st, rc, data = boot(lib)
        assert (rc, data) == (OK, b)
        lib.cut(prog_bytes=k, torn=torn)
        rc_save = lib.save(st, c, step=30)
        assert rc_save == (OK if k == total else EFLASH), k
        st, rc, data = boot(lib)
        assert rc == OK, f"cut after {k} bytes: load failed ({rc})"
        expect = c if rc_save == OK else b
        assert data == expect, f"cut after {k} of {total} bytes: recovered the wrong version"
        outcomes["C" if data == c else "B"] += 1
        # the host reader picks the same slot as the C loader
        assert newest_slot(lib.memory().tobytes(), SLOT, LAYOUT_ID).payload == expect
        # the next save after the reboot works and never destroys the version just recovered
        assert lib.save(st, version(4), step=40) == OK
        st, rc, data = boot(lib)
        assert (rc, data) == (OK, version(4))
        s0, _ = persist.read_slot(lib.memory().tobytes(), 0, SLOT)
        s1, _ = persist.read_slot(lib.memory().tobytes(), 1, SLOT)
        assert {s0.payload, s1.payload} == {expect, version(4)}
    assert outcomes == {"B": total, "C": 1}


@pytest.mark.parametrize("torn", [False, True])
def test_power_cut_at_every_erased_byte(lib, torn):
    """torn: the interrupted page is left holding noise rather than its old bytes."""
    a, b, c = version(1), version(2), version(3)
    st = fresh(lib)
    assert lib.save(st, a) == OK and lib.save(st, b) == OK
    before = lib.memory().copy()
    pages = -(-(len(c) + persist.HEADER_SIZE) // PAGE)
    for k in range(pages * PAGE):  # the erase of the target slot dies after k bytes
        lib.memory()[:] = before
        st, _, _ = boot(lib)
        lib.cut(erase_bytes=k, torn=torn)
        assert lib.save(st, c) == EFLASH
        st, rc, data = boot(lib)
        assert (rc, data) == (OK, b), f"erase cut after {k} bytes"


def test_first_save_cut_leaves_an_empty_store(lib):
    c = version(3)
    total = len(c) + persist.HEADER_SIZE
    for k in range(0, total + 1, 7):
        st = fresh(lib)
        lib.cut(prog_bytes=k)
        lib.save(st, c)
        st, rc, data = boot(lib)
        assert (rc, data) == ((OK, c) if k >= total else (EMPTY, b""))


def test_random_cuts_over_many_saves(lib):
    """A long life with power cuts at random points: the loaded version is always the last complete save."""
    rng = np.random.default_rng(0)
    st = fresh(lib, prog_unit=4)
    last = None
    for i in range(300):
        st, rc, data = boot(lib)
        assert (rc, data) == ((EMPTY, b"") if last is None else (OK, last))
        payload = version(100 + i)
        if rng.random() < 0.6:
            lib.cut(prog_bytes=int(rng.integers(0, len(payload) + 40)), erase_bytes=int(rng.integers(0, 5 * PAGE)),
                    torn=bool(rng.integers(2)))
        if lib.save(st, payload, step=i) == OK:
            last = payload
