"""`microtrain plan`: find the sparse-update scheme that fits a memory budget (or report a scheme's memory).

    microtrain plan mcunet-5fps --data DIR --budget 100KB --out scheme.json
    microtrain plan mcunet-5fps --scheme mcunet-5fps-99kb          # memory of an existing scheme
"""
from __future__ import annotations

from pathlib import Path

from .. import cli_checks as ck
from ..cache import cache_root
from ..errors import BudgetError, DatasetError

DEFAULT_CACHE = cache_root() / "contribution"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="search the sparse-update scheme that maximises accuracy under a memory budget",
        description="Measure what each bias/weight update is worth (short fine-tunes on a held-out split of "
        "the training images, cached), then search the scheme with the largest total gain whose extra "
        "training memory fits --budget. With --scheme, report the memory of an existing scheme instead.",
    )
    p.add_argument("model", help="model file or upstream model name (e.g. mcunet-5fps)")
    p.add_argument("--data", help="image folder: DIR/train/<class>/* (or DIR/<class>/*); only training images are used")
    p.add_argument("--budget", type=ck.memory_size, help="extra-memory budget, e.g. 100KB, 49.8KB, 1MB or bytes (KB = 1024 B)")
    p.add_argument("--out", help="write the scheme JSON here (for `microtrain train --scheme`)")
    p.add_argument("--scheme", help="report this scheme (JSON file or shipped name) instead of searching")
    p.add_argument("--gains", help="use this gain table (JSON) instead of running the contribution analysis")
    p.add_argument("--save-gains", help="write the measured gain table (JSON) here")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"contribution-analysis cache folder (default {DEFAULT_CACHE})")
    p.add_argument("--epochs", type=ck.positive_int, default=3, help="epochs of each analysis fine-tune (default 3)")
    p.add_argument("--lr", type=ck.positive_float, default=0.01, help="learning rate of the analysis fine-tunes")
    p.add_argument("--candidates", type=ck.positive_int, default=12, help="weight updates are considered for the last N convs (default 12)")
    p.add_argument("--metric", choices=("acc", "loss"), default="acc",
                   help="gain measured as held-out accuracy (default, as the paper) or held-out loss decrease")
    p.add_argument("--workers", type=ck.positive_int, default=2, help="parallel fine-tunes (default 2)")
    p.add_argument("--seed", type=ck.seed, default=0)
    p.add_argument("--selection", choices=("norm", "first"), default="norm", help="trained-channel selection")
    p.add_argument("--force", action="store_true", help="replace output files microtrain did not write")
    p.add_argument("--board", help="target part (see `compile --board`): refuse a scheme whose engine plan cannot fit it")
    p.add_argument("--ram", type=ck.memory_size, help="the part's SRAM, e.g. 128K (refuse a scheme that cannot fit it)")
    p.add_argument("--flash", type=ck.memory_size, help="the part's flash, e.g. 1M")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models import load_model
    from ..scheme_search.memory import MemoryModel, check_budget, format_bytes, parse_budget

    if args.out:
        ck.check_output_file(args.out, "--out", force=args.force)
    if args.save_gains:
        ck.check_output_file(args.save_gains, "--save-gains", force=args.force)
    if not args.scheme and not args.gains:
        ck.check_output_dir(args.cache, "--cache", force=True)
    if not args.scheme and not args.budget:
        raise BudgetError("plan needs --budget (e.g. --budget 100KB), or --scheme to report a scheme's memory")
    part = _part(args)  # a bad --board/--ram fails before any work
    graph = load_model(args.model)
    gains = _read_gains(graph, args.gains) if args.gains and not args.scheme else None  # even if nothing fits
    model = MemoryModel(graph)
    classes = None
    if args.scheme:
        classes = data_classes(args.data) if args.data else None
        from ..sparse.fixtures import load_scheme

        scheme = load_scheme(args.scheme).validate(graph)
        print(memory_table(model, scheme))
        _print_planner(_with_head(graph, classes), scheme, part)
        if args.budget:
            budget = parse_budget(args.budget)
            fits = model.scheme_bytes(scheme) <= budget
            print(f"{'fits' if fits else 'does NOT fit'} the {format_bytes(budget)} budget")
            return 0 if fits else 1
        return 0
    budget = parse_budget(args.budget)
    name = f"{graph.name}-searched-{args.budget.strip().lower()}"
    check_budget(model, budget)  # analytic, before any fine-tune
    classes = data_classes(args.data) if args.data else None  # a bad folder fails before any fine-tune
    smallest = smallest_update_bytes(model)
    if budget < smallest:
        from ..sparse.scheme import UpdateScheme

        print(f"nothing fits in {format_bytes(budget)} beyond the always-trained classifier "
              f"({model.minimum_bytes:.0f} B): the smallest further update needs {smallest:.0f} B; the plan is "
              "head-only (no contribution analysis run)")
        scheme = UpdateScheme(0, {}, name=name)
    else:
        table = gains if gains is not None else _gain_table(graph, args)
        from ..scheme_search.search import search

        result = search(table, model, budget, seed=args.seed, selection=args.selection, name=name)
        print(result.summary(table))
        scheme = result.scheme
    print(memory_table(model, scheme))
    _print_planner(_with_head(graph, classes), scheme, part)
    if args.out:  # pinned: training and code generation train exactly these channels, whatever the weights become
        scheme = scheme.pinned(graph)
        scheme.classes = classes
        path = scheme.save(ck.prepare_output_file(args.out))
        head = (f"; it records the classes {', '.join(classes)}: `microtrain compile` gives the model a "
                f"{len(classes)}-class head" if classes else "")
        print(f"wrote {path} (use: microtrain train {args.model} --scheme {path}{head})")
    return 0


def smallest_update_bytes(model) -> float:
    """The least extra memory of any scheme beyond the head: one bias, or one conv's smallest weight slice."""
    candidates = [model.bits(1, {})] + [model.bits(0, {i: 0.125}) for i in range(model.n)]
    return min(candidates) / 8


def data_classes(data) -> list[str]:
    from ..runtime.datasets import list_image_folder

    root = Path(data)
    classes, _ = list_image_folder(root / "train" if (root / "train").is_dir() else root)
    return classes


def _read_gains(graph, path):
    """The --gains table, checked against the model."""
    from ..scheme_search.search import GainTable

    table = GainTable.load(path)
    if table.model != graph.name:
        raise BudgetError(f"{path}: gain table was measured on {table.model!r}, not {graph.name!r}")
    return table


def _gain_table(graph, args):
    """The gain table measured by the contribution analysis on --data (cached)."""
    if not args.data:
        raise DatasetError("plan needs --data DIR (the training images) to measure gains, or --gains FILE")
    from ..scheme_search.contribution import AnalysisSettings, analyze

    root = Path(args.data)
    train_dir = root / "train" if (root / "train").is_dir() else root
    settings = AnalysisSettings(epochs=args.epochs, lr=args.lr, seed=args.seed, n_candidates=args.candidates,
                                metric=args.metric)
    table = analyze(graph, train_dir, settings=settings, cache_dir=args.cache, workers=args.workers,
                    log=lambda s: print(s, flush=True))
    if args.save_gains:
        table.save(ck.prepare_output_file(args.save_gains))
    return table


def _with_head(graph, classes):
    """The graph with the N-class head training will give it (the planner counts the head's weights)."""
    if not classes or len(classes) == graph.num_classes:
        return graph
    from ..quant.head import replace_head

    return replace_head(graph, len(classes))


def memory_table(model, scheme) -> str:
    from ..scheme_search.memory import format_bytes

    rows = model.breakdown(scheme)
    lines = [f"extra memory of {scheme.name or 'scheme'} on {model.graph_name} (upstream's analytic model, bytes):",
             f"  {'conv':>4} {'layer':<22} {'mask':>7} {'bias':>7} {'input':>8} {'weights':>8} {'total':>8}"]
    for r in rows:
        idx = "head" if r.index < 0 else str(r.index)
        lines.append(f"  {idx:>4} {r.name:<22} {r.mask / 8:7.0f} {r.bias / 8:7.0f} {r.saved_input / 8:8.0f} "
                     f"{r.weights / 8:8.0f} {r.bytes:8.0f}")
    total = sum(r.bits for r in rows) / 8
    lines.append(f"  total {format_bytes(total)} ({total:.0f} B)")
    return "\n".join(lines)


def _part(args):
    """(SRAM, flash) of --board/--ram/--flash, or None."""
    from ..budget import part_memory
    from ..scheme_search.memory import parse_budget

    try:
        return part_memory(args.board, args.ram and parse_budget(args.ram), args.flash and parse_budget(args.flash))
    except ValueError as e:
        raise BudgetError(str(e)) from None


def _print_planner(graph, scheme, part=None) -> None:
    """The engine planner's exact figures, when the training code generator is installed. With a part
    (SRAM, flash): planned for it (patched prefix and in-place convs when needed), BudgetError if it cannot fit."""
    from ..budget import part_sram_budget
    from ..errors import MicrotrainError
    from ..scheme_search.memory import planner_report

    options = {} if part is None else {"sram_budget": part_sram_budget(part[0]), "patch": "fit"}
    try:
        report = planner_report(graph, scheme, **options)
    except MicrotrainError as e:  # the analytic figure stands; say why the exact one is missing
        print(f"engine plan: unavailable for this scheme ({e})")
        return
    if report is None:
        print("engine plan: unavailable (no training code generator in this install)")
        return
    infer = report.infer_arena_bytes
    print(f"engine plan (exact, {graph.num_classes}-class head): training SRAM {report.training_sram_bytes / 1024:.1f} KB "
          f"(arena {report.arena_bytes:,} B + trainable {report.trainable_sram_bytes:,} B + scratch "
          f"{report.scratch_bytes:,} B); inference arena {infer / 1024:.1f} KB; "
          f"training adds {(report.training_sram_bytes - infer) / 1024:.1f} KB")
    if part is not None:
        report.check_part(*part)
        print(f"fits the part: {report.total_sram_bytes:,} B planned SRAM for {part[0]:,} B (with the firmware's own)")
