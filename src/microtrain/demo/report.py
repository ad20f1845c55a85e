"""The demo's printed report: a few lines a user can read in ten seconds."""
from __future__ import annotations


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:5.1f} %"


def _kb(n) -> str:
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n:.0f} B"


def _cached(sp) -> str:
    return f" ({sp['analysis_cached']} from the cache in the output folder)" if sp.get("analysis_cached") else ""


def format_report(result) -> str:
    st, sec = result.stages, result.seconds
    d, pre, q, before, sp, ad = (st[k] for k in ("data", "pretrain", "quantize", "before", "sparse", "adapt"))
    lines = [
        "microtrain demo: on-device adaptation of an int8 CNN to classes it never saw",
        f"  data       scikit-learn digits at {d['resolution']}x{d['resolution']}x3 (bundled, no network); "
        f"pretrain on {d['pretrain_classes']}, adapt to {d['new_classes']} "
        f"({d['new_train']} train / {d['new_val']} validation images)",
        f"  model      MobileNetV2-style CNN: {q['params']:,} parameters, {q['macs'] / 1e6:.2f} M MACs per image",
        f"  pretrain   {pre['description']}, {pre['epochs']} epochs ({sec.get('pretrain', 0):.0f} s)",
        f"  quantize   PTQ ({q['method']}, {q['calibration_images']} calibration images): held-out accuracy "
        f"float {_pct(q['float_val_acc'])}, int8 {_pct(q['int8_val_acc'])}",
        f"  sparse     {sp['analysis_runs']} measured fine-tunes{_cached(sp)} + evolutionary search "
        f"({sec.get('sparse_search', 0):.0f} s): "
        f"{sp['scheme_text']}",
        f"  memory     extra training memory {_kb(sp['extra_bytes'])} of a {sp['budget']} budget "
        f"(head only {_kb(sp['head_only_bytes'])}, full update {_kb(sp['full_update_bytes'])})",
        "",
        "  accuracy on the new classes (validation):",
        f"    before adaptation                     {_pct(before['val_acc'])}   (new zero-initialised head: chance)",
        f"    head only, int8 QAS                   {_pct(ad['head_only_val_acc'])}",
        f"    searched sparse scheme, int8 QAS      {_pct(ad['val_acc'])}   (NumPy simulation, {ad['epochs']} epochs, "
        f"batch {ad['batch_size']})",
    ]
    c = st.get("c_host", {})
    if "skipped" in c:
        lines.append(f"    generated C on the host               skipped: {c['skipped']}")
    else:
        lines.append(f"    generated C on the host, batch 1      {_pct(c['val_acc'])}   ({c['steps']} steps, "
                     f"{c['ms_per_step']:.2f} ms/step)")
    lines.append("")
    if "skipped" not in c:
        lines.append(f"  compiled   training SRAM {_kb(c['sram_training_bytes'])} (arena {_kb(c['arena_bytes'])} + "
                     f"trainable {_kb(c['trainable_bytes'])}) of the MCU's 256 KB; flash {_kb(c['flash_bytes'])} of 1 MB")
    qe = st.get("qemu", {})
    if "skipped" in qe:
        lines.append(f"  cortex-m7  skipped: {qe['skipped']}")
    else:
        lines.append(f"  cortex-m7  QEMU: {qe['train_samples']} training steps, parameters "
                     f"{'bit-identical to' if qe['params_bit_identical_to_host'] else 'DIFFERENT from'} the host build; "
                     f"firmware SRAM {_kb(qe['firmware_ram'])}, flash {_kb(qe['firmware_flash'])}")
    for what, why in st.get("plots", {}).items():
        lines.append(f"  plots      {what.replace('_', ' ')} {why}")
    lines.append(f"  time       {sec['total']:.0f} s in total")
    if result.files:
        lines.append("  files      " + ", ".join(result.files))
    return "\n".join(lines)
