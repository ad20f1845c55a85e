"""The step-kind table (steps.py): every kind autodiff and the passes emit has a NumPy executor, the ones
that reach C a lowering; unknown kinds fail in one place naming the known ones; summary() counts them all."""
from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import small_graph

from microtrain.autodiff import Step, build_training_graph
from microtrain.codegen.lower_train import training_graph_for
from microtrain.errors import GraphError
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme
from microtrain.steps import kind, kinds

SCHEME = UpdateScheme(3, {1: 0.5, 3: 1.0}, name="steps")


def test_every_emitted_kind_is_in_the_table():
    g = small_graph()
    before = {s.kind for s in build_training_graph(g, SCHEME.resolve(g)).steps}
    after = training_graph_for(g, SCHEME)
    emitted = before | {s.kind for s in after.steps}
    assert {"conv_weight_update", "conv_bias_update", "slice_channels", "sgd_update", "add_grad"} <= emitted
    assert emitted <= set(kinds())
    assert all(kind(k).lower is not None for k in {s.kind for s in after.steps})  # what reaches C lowers
    for k in {s.kind for s in after.steps} - {"forward"}:  # the passes' kinds are counted too
        assert f"{k} {sum(s.kind == k for s in after.steps)}" in after.summary()


def test_unknown_kinds_fail_in_one_place_naming_the_known_ones():
    with pytest.raises(GraphError, match=r"unknown training step kind 'conv_grad_magic'; known kinds: forward, "):
        kind("conv_grad_magic")
    g = small_graph()
    tg = build_training_graph(g, SCHEME.resolve(g))
    bad = replace(tg, steps=tg.steps + [Step("conv_grad_magic", "pw2", [], [])])
    with pytest.raises(GraphError, match="conv_grad_magic"):
        TrainingRuntime(bad)


def test_unfused_gradients_have_no_c_lowering():
    from microtrain.codegen import compile_model
    from microtrain.passes import bit_masks, prune

    with pytest.raises(GraphError, match="'conv_grad_weight' .* has no C lowering; run the default passes first"):
        compile_model(small_graph(), SCHEME, passes=(prune, bit_masks))
