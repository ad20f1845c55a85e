"""The embedded default of `microtrain demo`: pretrain a small CNN on some digits, quantise it, and adapt
it on-device (sparse update under a budget, QAS, generated C) to digits it never saw. See pipeline.py."""
from .pipeline import DemoConfig, DemoResult, run_demo  # noqa: F401
