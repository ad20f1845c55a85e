"""Errors a user can act on: each names the file, layer or value at fault."""


class MicrotrainError(Exception):
    """Base class of every error microtrain raises on purpose."""


class ModelFormatError(MicrotrainError):
    """A model file is unreadable, malformed, or refused as unsafe."""


class UnsafePickleError(ModelFormatError):
    """A pickle tried to reach a global outside the allowed numpy reconstruction set."""


class GraphError(MicrotrainError):
    """A graph is inconsistent (shapes, dtypes, dangling tensors, bad attributes)."""


class UnsupportedOpError(MicrotrainError):
    """An operation (or module) microtrain cannot compile or train."""


class SchemeError(MicrotrainError):
    """An update scheme is invalid for the graph it is applied to."""


class BudgetError(MicrotrainError):
    """A memory budget cannot be met."""


class DatasetError(MicrotrainError):
    """A dataset folder or image is unusable."""
