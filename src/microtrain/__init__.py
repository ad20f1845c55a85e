"""microtrain: on-device training of int8 CNNs inside 256 KB of SRAM."""

__version__ = "0.1.0"

from .errors import (  # noqa: F401
    BudgetError,
    DatasetError,
    GraphError,
    MicrotrainError,
    ModelFormatError,
    SchemeError,
    UnsafePickleError,
    UnsupportedOpError,
)
