"""Federated sparse updates over Flower (docs/fleet.md).

Only `layout`, `aggregate` and `partition` are NumPy-only; `client`, `strategy` and `simulation` import
Flower (`pip install 'microtrain[fleet]'`). Core microtrain never imports this package.
"""
import os

# Flower reports usage to its makers and Ray collects usage statistics unless told not to; a fleet of
# devices run from microtrain sends nothing anywhere but between its own server and clients.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
