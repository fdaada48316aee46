"""Prefill benchmark on the true LLaVA-1.5-7B geometry with random bf16 weights (no checkpoint needed).

What it measures, side by side in ONE run (every measurement interleaved across repeats, medians
reported, so that a shared or throttled CPU slows all rows alike and the *ratios* stay meaningful):

- per profile (baseline, visionzip-192, pdrop-192, duet-192, duet-128, duet-64 by default): one forward
  of the full model with `pixel_values`, `use_cache=True`, `logits_to_keep=1` (vision + LLM prefill),
  split by the session's recorder into vision encode (`get_image_features`) and LLM prefill (the
  language model's forward, stage-2 ranking included); speedup against baseline next to the theoretical
  bound, the actual-FLOP ratio from `duet_cli.flops` (as `duet profile` reports it);
- the *same-run floor* of each profile: the stock decoder layers called directly on exactly that
  profile's per-segment token counts (text tokens + the segment's visual tokens; SDPA, causal, a stock
  DynamicCache, then the final norm) with no reduction machinery at all. profile LLM prefill / floor
  is the cost of duet's hooks (goal: within 5%);
- stage-1 scoring and stage-2 ranking in isolation, on the real modules and the real shapes (stage 1:
  CLS query + keys from the scoring layer's q_proj/k_proj, `cls_attention_scores`, key mean,
  `select_and_merge` on a (1, 577, 1024) tensor; stage 2, per drop point: `adapter.query_key`, rotary,
  `text_to_visual_scores`, `plan_keep`, `repack_left` and the gather of the kept hidden states) as a
  share of baseline prefill (vision + LLM; goal: at most 3%);
- stage-1 encode (no projector): the stock SDPA tower; ours (the same SDPA tower with duet's armed
  scoring hooks on q_proj/k_proj, then scoring and selection: goal within 3% of stock); and the
  published approach
  (the same tower switched to eager attention with `output_attentions=True`, so every layer returns its
  attention map, then scoring from the map and selection);
- KV-cache bytes after prefill, read from the real cache, asserted equal to the ledger arithmetic.

Command (repo root, venv active):

    HF_HUB_OFFLINE=1 python benchmarks/prefill_7b.py --repeats 7      # full run, 32 decoder layers
    HF_HUB_OFFLINE=1 python benchmarks/prefill_7b.py --quick          # 8 decoder layers, smoke test

Options: --repeats R (3), --profiles P... , --threads T (torch.set_num_threads), --quick,
--out PATH (benchmarks/results/prefill_7b.json).

Expectations on a 2-core CPU with AMX-bf16: building the model takes ~70 s, the untimed warm-up pass
~2.5 minutes, each repeat 40-60 s (every profile, every floor and the vision variants once): ~6 minutes
with 3 repeats, ~10 with 7; --quick about a minute. Memory: ~14.5 GB resident for the weights
(7.06 B parameters in bf16) plus well under 1 GB of activations; one such model per machine at a time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transformers import (  # noqa: E402
    CLIPVisionConfig,
    DynamicCache,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from duet_cli.compat import cache_arg, output_cache  # noqa: E402
from duet_cli.engine.session import apply_profile  # noqa: E402
from duet_cli.families import get_adapter  # noqa: E402
from duet_cli.flops import Architecture, kv_cache_bytes, tokens_per_layer  # noqa: E402
from duet_cli.methods.pyramiddrop.rank import (  # noqa: E402
    gather_columns,
    plan_keep,
    query_rows,
    repack_left,
    text_to_visual_scores,
)
from duet_cli.methods.visionzip.select import cls_attention_scores, select_and_merge  # noqa: E402
from duet_cli.profiles import ResolvedProfile, load_profile, resolve_profile  # noqa: E402
from duet_cli.profiling import analyze  # noqa: E402

DEFAULT_PROFILES = ["visionzip-192", "pdrop-192", "duet-192", "duet-128", "duet-64"]
IMAGE_TOKEN_ID = 32000
TEXT_BEFORE = 6  # BOS + "USER:" -ish tokens before the image block
TEXT_AFTER = 34  # question + " ASSISTANT:" after it: 40 text tokens in all
BYTES = 2  # bf16


# ----------------------------------------------------------------------------------------------------
# Model


def build_config(decoder_layers: int) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=decoder_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    return config


def build_model(config: LlavaConfig) -> Any:
    """Meta construction, empty bf16 storage, fast random fill, non-persistent buffers re-created."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model = model.to(torch.bfloat16).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif "norm" in name or "layrnorm" in name:  # LayerNorm / RMSNorm weights
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    lm = model.model.language_model
    lm.rotary_emb = type(lm.rotary_emb)(config=config.text_config)  # inv_freq in fp32, as loaded models
    emb = model.model.vision_tower.embeddings
    emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and not torch.isfinite(buf).all():
            raise RuntimeError(f"buffer {name} is not initialised")
    return model.eval()


def pixel_values(image: Path) -> torch.Tensor:
    """examples/shapes.png through a CLIP image processor at 336, else random pixels."""
    try:
        from PIL import Image
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        px = proc(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
    except Exception:  # the benchmark does not depend on the picture
        px = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    return px.to(torch.bfloat16)


def input_ids(tokens_per_image: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    before = torch.randint(2, IMAGE_TOKEN_ID, (TEXT_BEFORE,), generator=gen)
    before[0] = 1  # BOS
    after = torch.randint(2, IMAGE_TOKEN_ID, (TEXT_AFTER,), generator=gen)
    image = torch.full((tokens_per_image,), IMAGE_TOKEN_ID)
    return torch.cat([before, image, after]).unsqueeze(0)


# ----------------------------------------------------------------------------------------------------
# Timed pieces (each returns seconds)


def clock(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_profile(
    model: Any, resolved: ResolvedProfile, px: torch.Tensor, sink: dict[str, Any]
) -> dict[str, float]:
    """One full prefill forward under the profile; the recorder splits it into vision and LLM."""
    with apply_profile(model, resolved) as session:
        ids = input_ids(session.tokens_per_image)
        mask = torch.ones_like(ids)
        session.recorder.reset()
        t0 = time.perf_counter()
        out = model(
            input_ids=ids,
            pixel_values=px,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
        )
        total = time.perf_counter() - t0
        rec = session.recorder
        rec.settle()  # CUDA: read the language model's event pair
        sink["finite"] = bool(torch.isfinite(out.logits).all())
        cache = output_cache(out)
        sink["kv_bytes"] = sum(
            (layer.keys.numel() + layer.values.numel()) * layer.keys.element_size() for layer in cache.layers
        )
        sink["cache_tokens"] = [int(layer.keys.shape[-2]) for layer in cache.layers]
        return {"total": total, "vision": rec.vision_s, "llm": rec.prefill_s}


def run_floor(model: Any, seg_lengths: list[tuple[int, int]], hidden: torch.Tensor) -> float:
    """The stock decoder layers on each segment's token count, no duet machinery (SDPA, causal)."""
    lm = model.model.language_model
    cache = DynamicCache(config=lm.config)
    t0 = time.perf_counter()
    layer = 0
    h = hidden
    for length, count in seg_lengths:
        h = h[:, -length:] if h.shape[1] >= length else hidden[:, :length]
        pos = torch.arange(length).unsqueeze(0)
        rope = lm.rotary_emb(h, pos)
        for _ in range(count):
            h = lm.layers[layer](
                h,
                attention_mask=None,
                position_ids=pos,
                **cache_arg(cache),
                use_cache=True,
                position_embeddings=rope,
            )
            layer += 1
    lm.norm(h)
    return time.perf_counter() - t0


def stage1_scoring(
    model: Any, resolved: ResolvedProfile, hidden: torch.Tensor, normed: torch.Tensor
) -> float:
    """What stage 1 adds to the tower: the CLS query, the keys, the scores, selection and merging."""
    cfg: Any = resolved.vision
    attn = get_adapter(model).vision_score_layer(model)
    t0 = time.perf_counter()
    b, n, _ = normed.shape
    q_cls = attn.q_proj(normed[:, :1]).view(b, attn.num_heads, attn.head_dim)
    keys = attn.k_proj(normed).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    scores = cls_attention_scores(q_cls, keys, float(attn.scale))
    select_and_merge(
        hidden,
        scores,
        keys.mean(dim=1),
        dominant=cfg.dominant,
        contextual=cfg.contextual,
        mode=cfg.contextual_mode,
        cluster_width=cfg.cluster_width or 1,
    )
    return time.perf_counter() - t0


def stage2_ranking(model: Any, resolved: ResolvedProfile, n0: int, hidden: torch.Tensor) -> float:
    """Every drop point's ranking on the real layer with the real lengths (query rows as configured)."""
    adapter = get_adapter(model)
    lm = model.model.language_model
    layers = lm.layers
    counts = [n0, *resolved.keep_counts(n0)]
    total = 0.0
    for s, layer_count in enumerate(resolved.llm_layers):
        length = TEXT_BEFORE + counts[s] + TEXT_AFTER
        h = hidden[:, :length]
        pos = torch.arange(length).unsqueeze(0)
        cos, sin = lm.rotary_emb(h, pos)  # exists already in the real prefill (the stock rotary tables)
        valid = torch.ones(1, length, dtype=torch.bool)
        visual = torch.zeros(1, length, dtype=torch.bool)
        visual[:, TEXT_BEFORE : TEXT_BEFORE + counts[s]] = True
        query = torch.zeros_like(valid)
        query[:, -1] = True
        if resolved.queries == "after_image":
            query[:, TEXT_BEFORE + counts[s] :] = True
        elif resolved.queries == "all":
            query[:] = True
        keep_n = torch.tensor([counts[s + 1]])
        layer = layers[layer_count]
        t0 = time.perf_counter()
        rows, row_valid = query_rows(query)
        q, k = adapter.query_key(layer, h, rows)
        q = adapter.apply_rope(q, gather_columns(cos, rows), gather_columns(sin, rows))
        k = adapter.apply_rope(k, cos, sin)
        scores = text_to_visual_scores(q, k, rows, row_valid, valid, adapter.attention_geometry(layer)[3])
        keep = plan_keep(scores, visual, valid, keep_n)
        gather_columns(h, repack_left(keep))
        total += time.perf_counter() - t0
    return total


def vision_encode(model: Any, px: torch.Tensor, variant: str, resolved: ResolvedProfile | None) -> float:
    """Stage-1 encode without the projector: 'stock' SDPA tower; 'ours' = the same tower with duet's
    armed q/k hooks + scoring + selection; 'published' = eager tower returning every attention map +
    scoring from the map + selection."""
    adapter = get_adapter(model)
    tower = adapter.vision_tower(model)
    feature = adapter.vision_feature_layer(model)
    if variant == "stock":
        t0 = time.perf_counter()
        out = tower(px, output_hidden_states=True, return_dict=True)
        _ = out.hidden_states[feature][:, 1:]
        return time.perf_counter() - t0
    assert resolved is not None
    cfg: Any = resolved.vision
    kwargs = {
        "dominant": cfg.dominant,
        "contextual": cfg.contextual,
        "mode": cfg.contextual_mode,
        "cluster_width": cfg.cluster_width or 1,
    }
    if variant == "ours":
        with apply_profile(model, resolved) as session:
            stage: Any = session.vision
            t0 = time.perf_counter()
            stage.reduce_tokens("image", px)  # tower + scoring + selection, as get_image_features runs them
            return time.perf_counter() - t0
    config = tower.config
    saved = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        t0 = time.perf_counter()
        out = tower(px, output_hidden_states=True, output_attentions=True, return_dict=True)
        attn_map = out.attentions[feature]  # (B, H, N, N) of the layer whose output is the feature layer
        scores = attn_map[:, :, 0, :].float().sum(dim=1)
        # the published method takes its keys from the same layer; recomputing them is cheap next to the tower
        layers = tower.encoder.layers
        encoder_layer = layers[feature % (len(layers) + 1) - 1]  # hidden_states[k] is layer k-1's output
        attn = encoder_layer.self_attn
        normed = encoder_layer.layer_norm1(out.hidden_states[feature - 1])
        b, n, _ = normed.shape
        keys = attn.k_proj(normed).view(b, n, attn.num_heads, attn.head_dim).mean(dim=2)
        select_and_merge(out.hidden_states[feature], scores, keys, **kwargs)
        return time.perf_counter() - t0
    finally:
        config._attn_implementation = saved


# ----------------------------------------------------------------------------------------------------
# Driver


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000.0


def paired_ratio(runs: dict[str, list[float]], num: str, den: str) -> float | None:
    if num not in runs or den not in runs:
        return None
    return round(statistics.median(x / y for x, y in zip(runs[num], runs[den])), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=DEFAULT_PROFILES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="8 decoder layers: a smoke test of the script")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prefill_7b.json")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "shapes.png")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder_layers = 8 if args.quick else 32
    started = time.perf_counter()
    config = build_config(decoder_layers)
    model = build_model(config)
    console.print(
        f"built LLaVA-1.5-7B geometry ({decoder_layers} decoder layers), "
        f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params bf16, "
        f"in {time.perf_counter() - started:.0f}s; threads={torch.get_num_threads()}"
    )
    adapter = get_adapter(model)
    dims = adapter.dims(model)
    arch = Architecture.from_config(model.config)
    names = ["baseline", *[p for p in args.profiles if p != "baseline"]]
    resolved = {n: resolve_profile(load_profile(n), dims) for n in names}
    n0 = {n: r.tokens_per_image(dims) for n, r in resolved.items()}
    text_tokens = TEXT_BEFORE + TEXT_AFTER
    analyses = {
        n: analyze(
            arch,
            r,
            dims,
            text_tokens=text_tokens,
            after_image_tokens=TEXT_AFTER,
            bytes_per_element=BYTES,
        )
        for n, r in resolved.items()
    }
    segments = {}
    for n, r in resolved.items():
        segs = r.segments(n0[n])
        segments[n] = [(text_tokens + c, last - first + 1) for first, last, c in segs]
    stage1_names = [n for n in names if resolved[n].vision is not None]
    stage2_names = [n for n in names if resolved[n].llm_layers]

    px = pixel_values(args.image)
    gen = torch.Generator().manual_seed(3)
    max_len = max(length for segs in segments.values() for length, _ in segs)
    llm_hidden = (torch.randn(1, max_len, 4096, generator=gen) * 0.02).to(torch.bfloat16)
    vis_hidden = torch.randn(1, dims.vision_tokens, 1024, generator=gen).to(torch.bfloat16)
    vis_normed = torch.nn.functional.layer_norm(vis_hidden.float(), (1024,)).to(torch.bfloat16)

    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    kv: dict[str, dict[str, Any]] = {}

    def one_pass(record: bool, rotate: int = 0) -> None:
        # each profile's prefill and its floor run back to back; the profile order rotates per repeat
        for n in names[rotate:] + names[:rotate]:
            sink: dict[str, Any] = {}
            parts = run_profile(model, resolved[n], px, sink)
            floor = run_floor(model, segments[n], llm_hidden)
            if not sink["finite"]:
                raise RuntimeError(f"{n}: non-finite logits")
            kv[n] = sink
            if record:
                for key, value in parts.items():
                    times[n][key].append(value)
                times[n]["floor"].append(floor)
        for n in stage1_names:
            t = stage1_scoring(model, resolved[n], vis_hidden, vis_normed)
            if record:
                times[n]["stage1_scoring"].append(t)
        for n in stage2_names:
            t = stage2_ranking(model, resolved[n], n0[n], llm_hidden)
            if record:
                times[n]["stage2_ranking"].append(t)
        ref = resolved[stage1_names[0]] if stage1_names else None
        variants = ["stock", "ours", "published"] if ref is not None else ["stock"]
        for v in variants:
            t = vision_encode(model, px, v, ref)
            if record:
                times["encode"][v].append(t)

    with torch.inference_mode():
        # the stock model, no hooks: finite logits
        ids = input_ids(dims.unreduced_tokens)
        out = model(input_ids=ids, pixel_values=px, use_cache=True, logits_to_keep=1, return_dict=True)
        if not torch.isfinite(out.logits).all():
            raise RuntimeError("the stock forward gives non-finite logits")
        del out
        t0 = time.perf_counter()
        one_pass(record=False)
        console.print(f"warm-up pass: {time.perf_counter() - t0:.0f}s; {args.repeats} timed repeats follow")
        for i in range(args.repeats):
            t0 = time.perf_counter()
            one_pass(record=True, rotate=i % len(names))
            console.print(f"repeat {i + 1}/{args.repeats}: {time.perf_counter() - t0:.0f}s")

    # -------------------------------------------------------------------------------------------------
    base = times["baseline"]
    base_total, base_llm = median_ms(base["total"]), median_ms(base["llm"])
    base_flops = analyses["baseline"]
    base_vision_llm_flops = base_flops.prefill.actual + base_flops.vision.actual
    rows: list[dict[str, Any]] = []
    for n in names:
        a, t = analyses[n], times[n]
        ledger_tokens = tokens_per_layer(a.ledger, text_tokens)
        ledger_bytes = kv_cache_bytes(arch.text, ledger_tokens, BYTES).bytes
        if kv[n]["kv_bytes"] != ledger_bytes or kv[n]["cache_tokens"] != ledger_tokens:
            raise AssertionError(
                f"{n}: KV cache {kv[n]['kv_bytes']} bytes ({kv[n]['cache_tokens']}) "
                f"!= ledger {ledger_bytes} ({ledger_tokens})"
            )
        total, vision, llm = median_ms(t["total"]), median_ms(t["vision"]), median_ms(t["llm"])
        floor = median_ms(t["floor"])
        paired = statistics.median(x / f for x, f in zip(t["llm"], t["floor"]))
        bound_llm = base_flops.prefill.actual / a.prefill.actual
        bound_total = base_vision_llm_flops / (a.prefill.actual + a.vision.actual)
        s1 = median_ms(t["stage1_scoring"]) if "stage1_scoring" in t else 0.0
        s2 = median_ms(t["stage2_ranking"]) if "stage2_ranking" in t else 0.0
        rows.append(
            {
                "profile": n,
                "tokens_in": a.tokens_in,
                "avg_visual_tokens": round(a.avg_visual_tokens, 2),
                "segments": segments[n],
                "ms": {
                    "total": round(total, 1),
                    "vision": round(vision, 1),
                    "llm_prefill": round(llm, 1),
                    "floor": round(floor, 1),
                    "stage1_scoring": round(s1, 2),
                    "stage2_ranking": round(s2, 2),
                },
                "runs_ms": {k: [round(x * 1000.0, 1) for x in v] for k, v in t.items()},
                "speedup_llm": round(base_llm / llm, 3),
                "speedup_total": round(base_total / total, 3),
                "bound_llm": round(bound_llm, 3),
                "bound_total": round(bound_total, 3),
                "measured_over_bound_llm": round(base_llm / llm / bound_llm, 3),
                "measured_over_bound_total": round(base_total / total / bound_total, 3),
                "floor_speedup_llm": round(median_ms(base["floor"]) / floor, 3),
                "llm_over_floor": round(paired, 3),
                "llm_over_floor_of_medians": round(llm / floor, 3),
                "overhead_by_difference_share": round((llm - floor) / base_total, 4),
                "overhead_share_of_baseline_prefill": round((s1 + s2) / base_total, 4),
                "kv_cache_bytes": kv[n]["kv_bytes"],
                "kv_ledger_bytes": ledger_bytes,
                "kv_vs_baseline": round(kv[n]["kv_bytes"] / kv["baseline"]["kv_bytes"], 4),
            }
        )
    enc = {k: median_ms(v) for k, v in times["encode"].items()}
    encode = {
        "ms": {k: round(v, 1) for k, v in enc.items()},
        "runs_ms": {k: [round(x * 1000.0, 1) for x in v] for k, v in times["encode"].items()},
        # paired: each variant over the stock tower run just before it in the same repeat, median over repeats
        "ours_over_stock": paired_ratio(times["encode"], "ours", "stock"),
        "published_over_stock": paired_ratio(times["encode"], "published", "stock"),
        "profile": stage1_names[0] if stage1_names else None,
    }

    table = Table(
        title=f"LLaVA-1.5-7B geometry, random bf16 weights, CPU, {decoder_layers} decoder layers, "
        f"{text_tokens} text tokens, median of {args.repeats}"
    )
    for col in (
        "profile",
        "N0",
        "avg vis",
        "total ms",
        "vision ms",
        "LLM ms",
        "floor ms",
        "LLM speedup",
        "floor speedup",
        "bound",
        "meas/bound",
        "total speedup",
        "bound",
        "meas/bound",
        "LLM/floor",
        "s1+s2 share",
        "KV MiB",
    ):
        table.add_column(col, justify="left" if col == "profile" else "right")
    for r in rows:
        ms = r["ms"]
        table.add_row(
            r["profile"],
            str(r["tokens_in"]),
            f"{r['avg_visual_tokens']:.2f}",
            f"{ms['total']:.0f}",
            f"{ms['vision']:.0f}",
            f"{ms['llm_prefill']:.0f}",
            f"{ms['floor']:.0f}",
            f"{r['speedup_llm']:.2f}x",
            f"{r['floor_speedup_llm']:.2f}x",
            f"{r['bound_llm']:.2f}x",
            f"{r['measured_over_bound_llm']:.2f}",
            f"{r['speedup_total']:.2f}x",
            f"{r['bound_total']:.2f}x",
            f"{r['measured_over_bound_total']:.2f}",
            f"{r['llm_over_floor']:.3f}",
            f"{100 * r['overhead_share_of_baseline_prefill']:.2f}%",
            f"{r['kv_cache_bytes'] / 2**20:.2f}",
        )
    console.print(table)
    em = encode["ms"]
    if "ours" in em:
        console.print(
            f"stage-1 encode ({encode['profile']}, no projector): stock SDPA tower {em['stock']:.0f} ms; "
            f"ours (SDPA + q/k hooks + scoring + selection) {em['ours']:.0f} ms = "
            f"{encode['ours_over_stock']:.3f}x stock; published (eager, every attention map) "
            f"{em['published']:.0f} ms = {encode['published_over_stock']:.3f}x stock "
            "(ratios: median over repeats of each variant / the stock tower of the same repeat)"
        )
    console.print(
        "KV-cache bytes read from the real cache equal the ledger arithmetic for every profile (asserted)."
    )
    result = {
        "benchmark": "prefill_7b",
        "date": _dt.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/prefill_7b.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "decoder_layers": decoder_layers,
        "text_tokens": text_tokens,
        "text_tokens_after_image": TEXT_AFTER,
        "repeats": args.repeats,
        "dtype": "bfloat16",
        "attention": "sdpa",
        "bound_convention": "actual FLOPs (duet_cli.flops), prefill = decoder layers + ranking + lm_head row",
        "overhead_method": "isolated: scoring pieces timed alone on the real modules and shapes "
        "(overhead_by_difference_share: (LLM prefill - floor) / baseline prefill, for context)",
        "llm_over_floor": "median over repeats of LLM prefill / floor of the same repeat (run back to back)",
        "rows": rows,
        "encode": encode,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out} ({result['wall_s']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
