"""Test helper: the parameter blob functions live in microtrain.codegen.param_blob (`microtrain export`
uses them); tests import them from here as before."""
from microtrain.codegen.param_blob import apply_params, decode_params, graph_slice  # noqa: F401
