"""Rich tables for `duet profile`, built from `profile_numbers.report_numbers` (the dict --json prints).

Pure functions; every formatter is public so tests can check that a cell shows its JSON number.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def fmt_gflops(flops: int) -> str:
    """FLOPs as GFLOPs: whole numbers with separators from 1000 up, else 4 significant digits."""
    g = flops / 1e9
    return f"{g:,.0f}" if g >= 1000 else f"{g:.4g}"


def fmt_mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.2f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_ms(spread: dict[str, Any] | None) -> str:
    """'12.3 ±0.6': median, then half the min-max range over the repeats."""
    if spread is None:
        return "-"
    half = (spread["max"] - spread["min"]) / 2
    return f"{spread['median']:.1f} ±{half:.1f}"


def fmt_memory(n_bytes: int | None) -> str:
    return "n/a" if n_bytes is None else f"{n_bytes / 2**20:,.0f} MiB"


def grid_note(grid: dict[str, Any] | None) -> str:
    """', reference image 64x64 patches' where every image has its own grid (nothing for fixed grids)."""
    if grid is None or grid["source"] == "fixed":
        return ""
    frames = f"{grid['t']}x" if grid["t"] != 1 else ""
    what = "reference image" if grid["source"] == "reference" else "image"
    return f", {what} {frames}{grid['h']}x{grid['w']} patches"


def _batch_note(numbers: dict[str, Any]) -> str:
    b = numbers["batch_size"]
    return "one prompt" if b == 1 else f"a batch of {b} prompts"


def _table(title: str, caption: str, columns: list[str]) -> Table:
    table = Table(title=title, caption=caption, header_style="bold", title_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    return table


def flops_table(numbers: dict[str, Any]) -> Table:
    """One row per profile: vision, prefill and one decode step in both conventions; the FLOP bound."""
    table = _table(
        f"{numbers['model']}: GFLOPs for {_batch_note(numbers)}",
        "paper = Σ 4nd²+2n²d+2ndm over layers; actual = 2 x multiply-adds of every matrix product "
        "(GQA, SwiGLU, causal attention, lm_head, projector or patch merger, reduction overhead); "
        "bound = baseline / profile prefill FLOPs (actual)",
        [
            "profile",
            "vision\npaper",
            "vision\nactual",
            "prefill\npaper",
            "prefill\nactual",
            "decode\npaper",
            "decode\nactual",
            "bound",
        ],
    )
    for r in numbers["rows"]:
        f = r["flops"]
        cells = [
            fmt_gflops(f[k][c]) for k in ("vision", "prefill", "decode_step") for c in ("paper", "actual")
        ]
        table.add_row(r["profile"], *cells, fmt_ratio(r["bound"]))
    return table


def tokens_table(numbers: dict[str, Any]) -> Table:
    """One row per profile: visual tokens entering the LLM, their per-layer average, KV-cache size."""
    src = {"tokenizer": "counted", "assumed": "assumed", "--text-tokens": "given"}[
        numbers["text_tokens_source"]
    ]
    base_kv = numbers["rows"][0]["kv_cache_bytes"]
    clip = f", one clip of {numbers['frames']} frames" if numbers.get("frames") else ""
    table = _table(
        f"visual tokens and KV cache ({numbers['text_tokens']} text tokens per prompt, {src}{clip}"
        f"{grid_note(numbers.get('image_grid'))})",
        f"KV cache after prefill, every layer holding what it saw, {numbers['kv_bytes_per_element']} "
        "bytes per element",
        ["profile", "tokens in", "of unreduced", "avg visual", "KV cache MiB", "vs baseline"],
    )
    for r in numbers["rows"]:
        table.add_row(
            r["profile"],
            str(r["tokens_in"]),
            str(r["unreduced"]),
            f"{r['avg_visual_tokens']:.2f}",
            fmt_mib(r["kv_cache_bytes"]),
            f"{100 * r['kv_cache_bytes'] / base_kv:.1f}%" if base_kv else "-",
        )
    return table


def measured_table(numbers: dict[str, Any], footer: str | None = None) -> Table:
    """One row per profile: median ± half-range times in ms, peak memory, speedup next to its bound;
    `footer` (how prompts and images were prepared) ends the caption."""
    rss = numbers.get("process_max_rss_bytes")
    memory_note = (
        f"peak memory is CUDA-only (process max RSS: {fmt_memory(rss)})"
        if rss is not None
        else "peak = torch.cuda.max_memory_allocated"
    )
    table = _table(
        f"measured on {numbers['device']} ({numbers['dtype']}), {_batch_note(numbers)}, ms: "
        f"median ±half-range of {numbers['repeats']} runs after {numbers['warmup']} warm-up",
        "prefill = the language model's first forward; speedup = baseline / profile prefill time; "
        f"bound = the FLOP ratio; {memory_note}" + (f"\n{footer}" if footer else ""),
        ["profile", "vision", "prefill", "decode\nper token", "peak\nmemory", "speedup", "bound"],
    )
    for r in numbers["rows"]:
        m = r["measured"]
        if m is None:
            continue
        table.add_row(
            r["profile"],
            fmt_ms(m["vision_ms"]),
            fmt_ms(m["prefill_ms"]),
            fmt_ms(m["decode_ms_per_token"]),
            fmt_memory(m["peak_memory_bytes"]),
            fmt_ratio(m["speedup"]),
            fmt_ratio(r["bound"]),
        )
    return table


def ledger_spans(ledgers: list[list[int]]) -> list[tuple[int, int]]:
    """Layer ranges (1-based, inclusive) over which every ledger is constant."""
    spans: list[tuple[int, int]] = []
    for i in range(len(ledgers[0])):
        column = [ledger[i] for ledger in ledgers]
        if spans and [ledger[spans[-1][0] - 1] for ledger in ledgers] == column:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i + 1, i + 1))
    return spans


def ledger_table(numbers: dict[str, Any]) -> Table:
    """Visual tokens per decoder layer (runs of equal layers collapsed), one column per profile."""
    rows = numbers["rows"]
    table = Table(title="visual tokens per decoder layer", header_style="bold", title_style="bold")
    table.add_column("layers", no_wrap=True)
    for r in rows:
        table.add_column(r["profile"], justify="right")
    for first, last in ledger_spans([r["ledger"] for r in rows]):
        label = str(first) if first == last else f"{first}-{last}"
        table.add_row(label, *[str(r["ledger"][first - 1]) for r in rows])
    return table
