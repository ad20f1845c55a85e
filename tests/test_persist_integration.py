"""Persistence wired into the generated C (issue 8.1): mt_save_params / mt_load_params of a generated
project on mt_persist's simulated flash. Train, save version A, train more, then cut power at EVERY byte
offset of the save of version B (program and erase phases, clean and torn bytes), reboot (mt_init + load):
the parameters are exactly A (save cut) or exactly B (save completed), never a mix, and the model infers
with them."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from microtrain import persist
from microtrain.codegen import compile_model
from microtrain.sparse.scheme import UpdateScheme
from microtrain.targets.host import HostModel, build_host

sys.path.insert(0, str(Path(__file__).parent))
from test_autodiff import small_graph  # noqa: E402  (a 5-conv int8 graph with a residual)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                                reason="needs gcc and make")
PAGE, SLOT = 128, 512  # 4 pages per slot; the blob (260 bytes) + 32-byte header fits one slot


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    scheme = UpdateScheme(n_bias=2, weights={3: 1.0}, name="persist-test")
    out = compile_model(small_graph(), scheme, out_dir=tmp_path_factory.mktemp("persist_proj"), lr=0.05, seed=3).out_dir
    return HostModel(build_host(out, opt="-O2"))


def data(n=12, seed=5):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 3)).astype(np.int8), rng.integers(0, 3, n)


def train(m, x, y, lo, hi):
    for i in range(lo, hi):
        assert np.isfinite(m.train_step(x[i], int(y[i])))


def reboot(m, pl):
    """Power back on, mt_init (compiled-in parameters), scan the flash, load the newest valid version."""
    pl.power_on()
    m.reset()
    st = m.store(pl, SLOT)
    return m.load_params(st), m.export_params()


def test_power_cut_at_every_byte_of_a_save_recovers_a_or_b(model):
    m, (x, y) = model, data()
    m.reset()
    pl = m.flash(2 * SLOT, PAGE)
    st = m.store(pl, SLOT)
    v0 = m.export_params()
    assert m.save_params(st) == persist.OK  # slot 0: the compiled-in version
    train(m, x, y, 0, 6)
    a, logits_a = m.export_params(), m.infer(x)
    assert m.save_params(st) == persist.OK  # slot 1: A
    train(m, x, y, 6, 12)
    b, logits_b = m.export_params(), m.infer(x)
    assert len({v0, a, b}) == 3, "training did not change the parameters: the test could not tell versions apart"
    assert not np.array_equal(logits_a, logits_b)
    image = pl.memory().copy()  # v0 in slot 0, A (newest) in slot 1: B will overwrite v0's slot

    def attempt(prog_bytes, erase_bytes, torn):
        pl.memory()[:] = image
        pl.power_on()
        m.import_params(b)
        st = m.store(pl, SLOT)
        pl.cut(prog_bytes, erase_bytes, torn)
        rc = m.save_params(st)
        powered = pl.powered
        load_rc, got = reboot(m, pl)
        assert load_rc == persist.OK
        if rc == persist.OK:
            assert got == b
            assert np.array_equal(m.infer(x), logits_b)
        else:
            assert not powered and rc == persist.EFLASH, (prog_bytes, erase_bytes, rc)
            assert got == a, f"cut after {prog_bytes} programmed / {erase_bytes} erased bytes: not version A"
            assert np.array_equal(m.infer(x), logits_a)
        return rc

    outcomes = {"A": 0, "B": 0}
    cut_points = {}
    for phase in ("erase", "program"):  # every byte erased (of B's slot, the old v0 slot), then programmed
        n = 0
        while True:  # cut after n bytes, n = 0, 1, ... until the save completes
            rcs = {attempt(n if phase == "program" else -1, n if phase == "erase" else -1, torn) for torn in (False, True)}
            if persist.OK in rcs:
                assert rcs == {persist.OK}
                outcomes["B"] += 2
                break
            outcomes["A"] += 2
            n += 1
            assert n <= SLOT, f"a save never completed ({phase} cuts)"
        cut_points[phase] = n
    # every byte of header and payload was cut through, and every page they occupy was cut while erasing
    assert cut_points["program"] >= persist.HEADER_SIZE + len(b)
    assert cut_points["erase"] >= -(-(persist.HEADER_SIZE + len(b)) // PAGE) * PAGE
    prog_bytes = cut_points["program"]
    # the completed image holds B, and the host-side reader agrees with the C loader
    assert persist.newest_slot(bytes(pl.memory()), SLOT, m.layout_id).payload == b
    print(f"power cuts: {outcomes['A']} recovered A, {outcomes['B']} completed B, {prog_bytes} programmed and "
          f"{cut_points['erase']} erased bytes per save")


def test_load_refuses_empty_and_foreign_stores(model):
    m = model
    m.reset()
    pl = m.flash(2 * SLOT, PAGE)
    init = m.export_params()
    st = m.store(pl, SLOT)
    assert m.load_params(st) == persist.EMPTY and m.export_params() == init
    foreign = pl.store(SLOT, (m.layout_id + 1) & 0xFFFFFFFF)
    assert pl.init(foreign) == persist.OK
    assert m.save_params(foreign) == persist.EINVAL  # never write a blob under another layout's id
    assert m.load_params(foreign) == persist.EINVAL
    # a valid slot written under another layout id (another firmware) is never imported
    pl.memory()[:] = np.frombuffer(persist.build_image(b"\x01" * len(init), SLOT, layout_id=foreign.layout_id), np.uint8)
    assert m.load_params(m.store(pl, SLOT)) == persist.ELAYOUT and m.export_params() == init


def test_rate_limited_saves(model):
    m, (x, y) = model, data()
    m.reset()
    pl = m.flash(2 * SLOT, PAGE)
    st = m.store(pl, SLOT, min_steps=3, max_saves=2)
    results = []
    for i in range(9):
        train(m, x, y, i, i + 1)
        results.append(m.save_params(st, if_due=True))
    assert results.count(persist.OK) == 2 and results[:2] == [persist.SKIPPED] * 2 and results[2] == persist.OK
    assert m.save_params(st) == persist.EWORN  # lifetime budget spent: even an explicit save is refused
    pages_per_save = -(-(persist.HEADER_SIZE + m.lib.mt_params_size()) // PAGE)  # only the pages the blob uses
    assert sum(pl.erase_count(p) for p in range(2 * SLOT // PAGE)) == 2 * pages_per_save
