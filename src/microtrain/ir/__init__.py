from .graph import Graph, Node, QuantParams, TensorSpec  # noqa: F401
from .serialize import load_graph, save_graph  # noqa: F401
from .validate import infer_shapes, validate  # noqa: F401
