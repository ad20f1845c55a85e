"""The demo's PNG plots (matplotlib, Agg backend: no display needed): loss curves, the memory timeline of
the compiled training step, and accuracy versus extra training memory of every analysed scheme."""
from __future__ import annotations

from pathlib import Path


def save_plots(result, compiled, out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        result.stages["plots"] = {"skipped": "matplotlib is not installed (pip install 'microtrain[demo]')"}
        return []
    out_dir = Path(out_dir)
    files = [_loss(plt, result, out_dir / "loss_curve.png"), _accuracy_vs_memory(plt, result, out_dir / "accuracy_vs_memory.png")]
    timeline = _memory_timeline(plt, result, compiled, out_dir / "memory_timeline.png")
    if timeline:
        files.append(timeline)
    else:
        result.stages["plots"] = {"memory_timeline": "skipped: no compiled training step (C stage skipped)"}
    return [str(f) for f in files]


def _finish(plt, fig, ax, path: Path, legend_size=None) -> Path:
    """Legend, grid, layout, save, close: the same last steps of every demo plot."""
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _loss(plt, result, path: Path) -> Path:
    st = result.stages
    fig, ax = plt.subplots(figsize=(6.4, 4))
    pre = st["pretrain"]["losses"]
    ax.plot(range(1, len(pre) + 1), pre, "o-", label=f"pretraining, float ({st['pretrain']['backend']})")
    hist = st["adapt"]["history"]
    ax.plot([h["epoch"] for h in hist], [h["train_loss"] for h in hist], "s-", label="adaptation, int8 QAS (NumPy)")
    c = st.get("c_host", {})
    if c.get("losses"):
        ax.plot(range(1, len(c["losses"]) + 1), c["losses"], "^-", label="adaptation, generated C (batch 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("microtrain demo: loss")
    return _finish(plt, fig, ax, path)


def _accuracy_vs_memory(plt, result, path: Path) -> Path:
    sp = result.stages["sparse"]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    pts = sp["analysis_points"]
    ax.scatter([p["extra_bytes"] for p in pts], [100 * p["heldout_acc"] for p in pts], s=18, alpha=0.6,
               label="analysed schemes (held-out part of the training images)")
    ax.axvline(sp["budget_bytes"], color="tab:red", ls="--", label=f"budget {sp['budget']}")
    ad = result.stages["adapt"]
    ax.scatter([sp["extra_bytes"]], [100 * ad["val_acc"]], marker="*", s=180, color="tab:green",
               label="searched scheme, after adaptation (validation)")
    ax.scatter([sp["head_only_bytes"]], [100 * ad["head_only_val_acc"]], marker="D", s=50, color="tab:orange",
               label="head only, after adaptation (validation)")
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("extra training memory (bytes, analytic)")
    ax.set_ylabel("accuracy on the new classes (%)")
    ax.set_title("accuracy versus memory")
    return _finish(plt, fig, ax, path, legend_size=7)


def _live_bytes(plan, step: int) -> int:
    """Bytes of the arena blocks live at `step` (in-place aliases share their root's storage)."""
    live: dict[str, int] = {}
    for p in plan.placements.values():
        if p.first <= step <= p.last:
            root = p.alias_of or p.name
            live[root] = max(live.get(root, 0), p.nbytes)
    return sum(live.values())


def _memory_timeline(plt, result, compiled, path: Path):
    if compiled is None or compiled.train_plan is None:
        return None
    plan = compiled.train_plan
    steps = max((p.last for p in plan.placements.values()), default=-1) + 1
    live = [_live_bytes(plan, i) for i in range(steps)]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.step(range(steps), [v / 1024 for v in live], where="post", label="live arena buffers")
    ax.axhline(plan.size / 1024, color="tab:red", ls="--", label=f"planned arena {plan.size / 1024:.1f} KB")
    ax.set_xlabel("step of one training iteration (forward, backward, updates)")
    ax.set_ylabel("KB")
    ax.set_title("memory timeline of the compiled training step")
    return _finish(plt, fig, ax, path)
