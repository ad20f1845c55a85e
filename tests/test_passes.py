"""Passes over the TrainingGraph and the arena planner: each pass states what it removes or moves,
and the transformed graph computes exactly the same numbers (loss, logits, trained parameters)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import model_path

from microtrain.arena import check_no_overlap, plan_arena
from microtrain.autodiff import Step, build_training_graph
from microtrain.ir.program import Buffer
from microtrain.passes import DEFAULT_PASSES, bit_masks, fuse_updates, mark_inplace, prune, run_passes, slice_inputs

from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme

# partial pointwise, partial and whole depthwise, the dense first conv: every weight-update family
SCHEME = UpdateScheme(n_bias=12, weights={0: 0.5, 1: 1.0, 39: 0.25, 40: 0.5, 41: 0.125}, name="mixed")

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def small_graph():
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head

    return replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 3).with_resolution(40)


def _train(graph, passes, steps=3, lr=5e-3):
    """Loss per step and the final parameters of the trained nodes, on a private copy of the graph."""
    g = graph.copy()
    tg = build_training_graph(g, SCHEME.resolve(g))
    rt = TrainingRuntime(tg, seed=1) if passes is None else TrainingRuntime(run_passes(tg, passes), seed=1)
    rng = np.random.default_rng(0)
    losses = []
    for i in range(steps):
        x = rng.integers(-128, 128, size=(2,) + g.input_spec.shape).astype(np.int8)
        losses.append(rt.train_step({g.input: x}, np.array([i % 3, (i + 1) % 3]), lr, i)["loss"])
    params = {n: {k: v.copy() for k, v in g.node(n).params.items()} for n in tg.trained}
    return losses, params


@pytest.fixture(scope="module")
def reference(small_graph):
    return _train(small_graph, None)


@pytest.mark.parametrize("passes", [(prune,), (fuse_updates,), (bit_masks,), (slice_inputs,), (mark_inplace,),
                                    (fuse_updates, slice_inputs), DEFAULT_PASSES],
                         ids=["prune", "fuse_updates", "bit_masks", "slice_inputs", "mark_inplace", "fuse+slice", "all"])
def test_pass_keeps_the_numbers(small_graph, reference, passes):
    losses, params = _train(small_graph, passes)
    ref_losses, ref_params = reference
    assert losses == ref_losses
    trained_something = False
    for node, p in ref_params.items():
        for k, v in p.items():
            np.testing.assert_array_equal(params[node][k], v, err_msg=f"{node}.{k}")
            trained_something |= not np.array_equal(v, small_graph.node(node).params[k])
    assert trained_something  # the comparison is not vacuous


def _tg(graph):
    return build_training_graph(graph.copy(), SCHEME.resolve(graph))


def test_prune_removes_dead_steps_and_unread_masks(small_graph):
    tg = _tg(small_graph)
    n_before = len(tg.steps)
    # a gradient into the frozen prefix nobody reads, and a mask nobody reads
    first_trained = next(s for s in tg.steps if s.kind == "conv_grad_acc" and s.node == "first_conv")
    dead = Step("conv_grad_input", "first_conv", list(first_trained.outputs), ["grad:input"], {"in_shape": (40, 40, 3)})
    tg.steps.insert(tg.steps.index(first_trained) + 1, dead)
    fwd = next(s for s in tg.steps if s.kind == "forward" and s.node == "pool")
    fwd.outputs.append("mask:pool")
    fwd.attrs["save_mask"] = True
    out = prune(tg)
    assert len(out.steps) == n_before
    assert all("grad:input" not in s.outputs for s in out.steps)
    pool = next(s for s in out.steps if s.kind == "forward" and s.node == "pool")
    assert pool.outputs == ["pool.out"] and not pool.attrs["save_mask"]


def test_fuse_updates_stores_no_weight_gradient(small_graph):
    tg = _tg(small_graph)
    out = fuse_updates(tg)
    assert not out.steps_of("sgd_update") and not out.steps_of("conv_grad_weight") and not out.steps_of("conv_grad_bias")
    assert not [t for t in out.tensors.values() if t.role == "param_grad"]
    n_updates = len(out.steps_of("conv_weight_update")) + len(out.steps_of("conv_bias_update"))
    assert n_updates == len(tg.steps_of("sgd_update"))
    pos = {id(s): i for i, s in enumerate(out.steps)}
    for u in out.steps_of("conv_weight_update"):
        # after the last reader of the weight (the node's conv_grad_input), before anything else needs it
        readers = [s for s in out.steps if s.node == u.node and s.kind in ("forward", "conv_grad_input")]
        assert all(pos[id(r)] < pos[id(u)] for r in readers)
        producers = [s for s in out.steps if set(s.outputs) & set(u.inputs)]
        earliest = max(pos[id(s)] for s in producers + readers) + 1
        between = out.steps[earliest : pos[id(u)]]
        assert all(s.kind in ("conv_weight_update", "conv_bias_update") for s in between)  # as early as legal


def test_bit_masks_shrink_masks_8x(small_graph):
    from microtrain.passes.masks import mask_nbytes

    tg = _tg(small_graph)
    out = bit_masks(tg)
    masks = [t for t in out.tensors.values() if t.role == "mask"]
    assert masks and all(t.dtype == "bit" for t in masks)
    for t in masks:
        assert mask_nbytes(t) == (int(np.prod(t.shape)) + 7) // 8


def test_slice_inputs_keeps_only_trained_channels(small_graph):
    tg = fuse_updates(_tg(small_graph))
    out = slice_inputs(tg)
    slices = out.steps_of("slice_channels")
    partial = [s for s in tg.steps_of("conv_weight_update")
               if len(s.attrs["channels"]) < tg.tensors[s.inputs[0]].shape[-1]]
    assert len(slices) == len(partial) > 0
    for s in slices:
        saved = out.tensors[s.outputs[0]]
        assert saved.shape[-1] == len(s.attrs["channels"])
        # the full input is no longer read by any backward step
        full = s.inputs[0]
        assert all(full not in st.inputs for st in out.steps if st.kind not in ("forward", "slice_channels"))


def test_mark_inplace_only_over_dying_inputs(small_graph):
    out = run_passes(_tg(small_graph), DEFAULT_PASSES)
    marked = [(i, s) for i, s in enumerate(out.steps) if "inplace_of" in s.attrs]
    assert marked
    for i, s in marked:
        src = s.attrs["inplace_of"]
        assert all(src not in later.inputs for later in out.steps[i + 1 :])
        assert src != out.graph.input


# ----- the arena planner ----------------------------------------------------------------------------------
class _S:
    def __init__(self, reads, writes):
        self.reads, self.writes, self.kernel, self.node = reads, writes, "k", ""


def test_planner_reuses_dead_memory_and_never_overlaps_live_buffers():
    bufs = {n: Buffer(n, size, "int8") for n, size in [("a", 100), ("b", 60), ("c", 100), ("d", 40)]}
    steps = [_S([], ["a"]), _S(["a"], ["b"]), _S(["b"], ["c"]), _S(["c"], ["d"])]
    plan = plan_arena(steps, bufs)
    check_no_overlap(plan)
    # at most two neighbours live at once: a+b = 104 (aligned), b+c = 104 + 64 ... peak = max pair
    assert plan.size == 104 + 64
    in_place = plan_arena(steps, bufs, aliases={"d": "c"})
    assert in_place.offset("d") == in_place.offset("c")
    check_no_overlap(in_place)


def test_planner_detects_overlap():
    from microtrain.arena import ArenaPlan, Placement

    bad = ArenaPlan(64, {"x": Placement("x", "a", "int8", 32, 0, 2, 0), "y": Placement("y", "a", "int8", 32, 1, 3, 16)})
    with pytest.raises(AssertionError, match="overlap"):
        check_no_overlap(bad)
