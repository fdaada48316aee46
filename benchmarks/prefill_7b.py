"""Prefill benchmark on the true LLaVA-1.5-7B geometry with random weights (no checkpoint needed).

What it measures, side by side in ONE run (every measurement interleaved across repeats, medians
reported, so that a shared or throttled CPU slows all rows alike and the *ratios* stay meaningful):

- per profile (baseline, visionzip-192, pdrop-192, duet-192, duet-128, duet-64 by default): one forward
  of the full model with `pixel_values`, `use_cache=True`, `logits_to_keep=1` (vision + LLM prefill),
  split by the session's recorder into vision encode (`get_image_features`) and LLM prefill (the
  language model's forward, stage-2 ranking included); speedup against baseline next to the theoretical
  bound, the actual-FLOP ratio from `duet_cli.cost.flops` (as `duet profile` reports it);
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
    HF_HUB_OFFLINE=1 python benchmarks/prefill_7b.py --quick          # 4 decoder layers, one repeat

Options: --repeats R (3; 1 with --quick), --profiles P... , --threads T (torch.set_num_threads),
--quick, --layers N (decoder layers: 32; 4 with --quick), --dtype auto|bfloat16|float32 (auto),
--device cpu|cuda (cpu), --out PATH (benchmarks/results/prefill_7b.json), --image.

The dtype. `auto` takes bf16 where it runs in hardware (a CUDA device with bf16; a CPU with AMX-bf16 or
AVX512-BF16 by /proc/cpuinfo, or whose timed bf16 matmul probe is not slower than fp32), else fp32: on
an AVX2-only CPU bf16 is emulated, 17-56x slower than fp32 (the probe on a 2-core AMD EPYC). The JSON
records the dtype used and why. Before building, the weights' size is checked against the free memory
(fp32 7B weights need 26.3 GiB; the script stops with one line naming a --layers that fits), and the
stock forward that opens the run is timed to print an estimate of the whole run before it starts; a
status line follows every profile of every pass.

Expectations. 2-core CPU with AMX-bf16 (bf16): build ~70 s, warm-up pass ~2.5 minutes, each repeat
40-60 s: ~6 minutes with 3 repeats, ~10 with 7; ~14.5 GB resident (7.06 B parameters).
2-core AMD EPYC, AVX2 only (fp32): the 32-layer model (26.3 GiB of fp32 weights) does not fit in its
24 GB and is refused before anything is built; a decoder layer forward over the prompt takes 8.5-16 s
there, depending on the load, so even a pass that fits takes tens of minutes. --quick (4 layers, the
fewest on which the duet profiles' drops resolve; pdrop-192, which needs 6, is left out with a note;
one repeat, no warm-up pass) took 550 s at a load average of 4-5, 6.8 GB peak. On a GPU (bf16) a pass
takes seconds: benchmarks/gpu_check.py runs this benchmark there. benchmarks/README.md has the table.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import GIB, DtypeChoice, Progress, available_bytes, choose_dtype, sync  # noqa: E402
from transformers import (  # noqa: E402
    CLIPVisionConfig,
    DynamicCache,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from duet_cli.compat import cache_arg, output_cache  # noqa: E402
from duet_cli.cost.flops import Architecture, kv_cache_bytes, tokens_per_layer  # noqa: E402
from duet_cli.cost.profiling import analyze  # noqa: E402
from duet_cli.engine.session import apply_profile  # noqa: E402
from duet_cli.errors import ProfileError  # noqa: E402
from duet_cli.families import get_adapter  # noqa: E402
from duet_cli.methods.pyramiddrop.rank import (  # noqa: E402
    gather_columns,
    plan_keep,
    query_rows,
    repack_left,
    text_to_visual_scores,
)
from duet_cli.methods.visionzip.select import cls_attention_scores, select_and_merge  # noqa: E402
from duet_cli.profiles import ResolvedProfile, load_profile, resolve_profile  # noqa: E402

DEFAULT_PROFILES = ["visionzip-192", "pdrop-192", "duet-192", "duet-128", "duet-64"]
IMAGE_TOKEN_ID = 32000
TEXT_BEFORE = 6  # BOS + "USER:" -ish tokens before the image block
TEXT_AFTER = 34  # question + " ASSISTANT:" after it: 40 text tokens in all
QUICK_LAYERS = 4  # the fewest on which the duet profiles' drops (1/2 and 3/4 of the depth) resolve
MEMORY_MARGIN = GIB  # activations, the cache and the allocator's slack next to the weights
# LLaVA-1.5-7B's widths, and tiny ones (for a smoke test of the machinery: benchmarks/gpu_check.py
# --quick) that keep the CLIP patch geometry (336 px / 14 = 576 patches), so every profile resolves alike
WIDTHS: dict[str, dict[str, int]] = {
    "7b": {"vision_hidden": 1024, "vision_ffn": 4096, "vision_layers": 24, "vision_heads": 16,
           "hidden": 4096, "ffn": 11008, "heads": 32},
    "tiny": {"vision_hidden": 64, "vision_ffn": 128, "vision_layers": 3, "vision_heads": 4,
             "hidden": 128, "ffn": 256, "heads": 4},
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Model


def build_config(decoder_layers: int, widths: str = "7b") -> Any:
    w = WIDTHS[widths]
    vision = CLIPVisionConfig(
        hidden_size=w["vision_hidden"],
        intermediate_size=w["vision_ffn"],
        num_hidden_layers=w["vision_layers"],
        num_attention_heads=w["vision_heads"],
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        hidden_size=w["hidden"],
        intermediate_size=w["ffn"],
        num_hidden_layers=decoder_layers,
        num_attention_heads=w["heads"],
        num_key_value_heads=w["heads"],
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    settings: dict[str, Any] = {
        "image_token_id": IMAGE_TOKEN_ID,  # the keyword of transformers 5 (its type stubs lag behind)
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
    }
    config: Any = LlavaConfig(vision_config=vision, text_config=text, **settings)
    config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config.text_config._attn_implementation = "sdpa"
    return config


def weight_bytes(config: Any, dtype: torch.dtype) -> tuple[int, int]:
    """(bytes of all weights, bytes of one decoder layer) in `dtype`, from a meta-device model."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    size = torch.empty((), dtype=dtype).element_size()
    total = sum(p.numel() for p in model.parameters()) * size
    layer = sum(p.numel() for p in model.model.language_model.layers[0].parameters()) * size
    return total, layer


class DoesNotFit(RuntimeError):
    """The weights would not fit in the free memory (raised before anything is allocated)."""


def check_memory(config: Any, dtype: torch.dtype, device: torch.device) -> str:
    """A line saying what the weights need and what there is; raises DoesNotFit (one line, naming a
    --layers that fits) when they do not fit."""
    total, layer = weight_bytes(config, dtype)
    room = available_bytes(device)
    layers = config.text_config.num_hidden_layers
    need = total + MEMORY_MARGIN
    line = f"weights {total / GIB:.1f} GiB ({str(dtype).removeprefix('torch.')}, {layers} decoder layers)"
    if room is None:
        return line + "; free memory unknown"
    line += f", {room / GIB:.1f} GiB free on {device.type}"
    if need > room:
        fits = int((room - MEMORY_MARGIN - (total - layers * layer)) // layer)
        hint = f"--layers {fits} fits" if fits >= QUICK_LAYERS else "no --layers fits"
        raise DoesNotFit(
            f"the model does not fit: {line} ({layer / GIB:.2f} GiB per decoder layer; {hint}, "
            "or try another --dtype)"
        )
    return line


def build_model(config: Any, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> Any:
    """Meta construction, empty storage, fast random fill, non-persistent buffers re-created."""
    model: Any
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model = model.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
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
    # inv_freq in fp32, as loaded models have it
    lm.rotary_emb = type(lm.rotary_emb)(config=config.text_config).to(device)
    emb = model.model.vision_tower.embeddings
    positions = torch.arange(emb.num_positions, device=device).expand((1, -1))
    emb.register_buffer("position_ids", positions, persistent=False)
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and not torch.isfinite(buf).all():
            raise RuntimeError(f"buffer {name} is not initialised")
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None  # random weights: generate exactly max_new_tokens
    return model.eval()


def pixel_values(image: Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> torch.Tensor:
    """examples/shapes.png through a CLIP image processor at 336, else random pixels."""
    try:
        from PIL import Image
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        px = proc(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
    except Exception:  # the benchmark does not depend on the picture
        px = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    return px.to(device=device, dtype=dtype)


def input_ids(tokens_per_image: int, device: str | torch.device = "cpu", batch: int = 1) -> torch.Tensor:
    """`batch` prompts of TEXT_BEFORE random tokens, the image placeholders, TEXT_AFTER random tokens."""
    gen = torch.Generator().manual_seed(2)
    before = torch.randint(2, IMAGE_TOKEN_ID, (batch, TEXT_BEFORE), generator=gen)
    before[:, 0] = 1  # BOS
    after = torch.randint(2, IMAGE_TOKEN_ID, (batch, TEXT_AFTER), generator=gen)
    image = torch.full((batch, tokens_per_image), IMAGE_TOKEN_ID)
    return torch.cat([before, image, after], dim=1).to(device)


# ----------------------------------------------------------------------------------------------------
# Timed pieces (each returns seconds)


def clock(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    if device is not None:
        sync(device)
    t0 = time.perf_counter()
    fn()
    if device is not None:
        sync(device)
    return time.perf_counter() - t0


def run_profile(
    model: Any, resolved: ResolvedProfile, px: torch.Tensor, sink: dict[str, Any]
) -> dict[str, float]:
    """One full prefill forward under the profile; the recorder splits it into vision and LLM."""
    with apply_profile(model, resolved) as session:
        ids = input_ids(session.tokens_per_image, px.device)
        mask = torch.ones_like(ids)
        session.recorder.reset()
        sync(px.device)
        t0 = time.perf_counter()
        out = model(
            input_ids=ids,
            pixel_values=px,
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
        )
        sync(px.device)
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
    sync(hidden.device)
    t0 = time.perf_counter()
    layer = 0
    h = hidden
    for length, count in seg_lengths:
        h = h[:, -length:] if h.shape[1] >= length else hidden[:, :length]
        pos = torch.arange(length, device=hidden.device).unsqueeze(0)
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
    sync(hidden.device)
    return time.perf_counter() - t0


def stage1_scoring(
    model: Any, resolved: ResolvedProfile, hidden: torch.Tensor, normed: torch.Tensor
) -> float:
    """What stage 1 adds to the tower: the CLS query, the keys, the scores, selection and merging."""
    cfg: Any = resolved.vision
    attn: Any = get_adapter(model).vision_score_layer(model)
    sync(hidden.device)
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
    sync(hidden.device)
    return time.perf_counter() - t0


def stage2_ranking(model: Any, resolved: ResolvedProfile, n0: int, hidden: torch.Tensor) -> float:
    """Every drop point's ranking on the real layer with the real lengths (query rows as configured)."""
    adapter = get_adapter(model)
    lm = model.model.language_model
    layers = lm.layers
    dev = hidden.device
    counts = [n0, *resolved.keep_counts(n0)]
    total = 0.0
    for s, layer_count in enumerate(resolved.llm_layers):
        length = TEXT_BEFORE + counts[s] + TEXT_AFTER
        h = hidden[:, :length]
        pos = torch.arange(length, device=dev).unsqueeze(0)
        cos, sin = lm.rotary_emb(h, pos)  # exists already in the real prefill (the stock rotary tables)
        valid = torch.ones(1, length, dtype=torch.bool, device=dev)
        visual = torch.zeros(1, length, dtype=torch.bool, device=dev)
        visual[:, TEXT_BEFORE : TEXT_BEFORE + counts[s]] = True
        query = torch.zeros_like(valid)
        query[:, -1] = True
        if resolved.queries == "after_image":
            query[:, TEXT_BEFORE + counts[s] :] = True
        elif resolved.queries == "all":
            query[:] = True
        keep_n = torch.tensor([counts[s + 1]], device=dev)
        layer = layers[layer_count]
        sync(dev)
        t0 = time.perf_counter()
        rows, row_valid = query_rows(query)
        q, k = adapter.query_key(layer, h, rows)
        q = adapter.apply_rope(q, gather_columns(cos, rows), gather_columns(sin, rows))
        k = adapter.apply_rope(k, cos, sin)
        scores = text_to_visual_scores(q, k, rows, row_valid, valid, adapter.attention_geometry(layer)[3])
        keep = plan_keep(scores, visual, valid, keep_n)
        gather_columns(h, repack_left(keep))
        sync(dev)
        total += time.perf_counter() - t0
    return total


def vision_encode(model: Any, px: torch.Tensor, variant: str, resolved: ResolvedProfile | None) -> float:
    """Stage-1 encode without the projector: 'stock' SDPA tower; 'ours' = the same tower with duet's
    armed q/k hooks + scoring + selection; 'published' = eager tower returning every attention map +
    scoring from the map + selection."""
    adapter = get_adapter(model)
    tower: Any = adapter.vision_tower(model)
    feature = adapter.vision_feature_layer(model)
    if variant == "stock":
        sync(px.device)
        t0 = time.perf_counter()
        out = tower(px, output_hidden_states=True, return_dict=True)
        _ = out.hidden_states[feature][:, 1:]
        sync(px.device)
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
            sync(px.device)
            t0 = time.perf_counter()
            stage.reduce_tokens("image", px)  # tower + scoring + selection, as get_image_features runs them
            sync(px.device)
            return time.perf_counter() - t0
    config = tower.config
    saved = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        sync(px.device)
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
        sync(px.device)
        return time.perf_counter() - t0
    finally:
        config._attn_implementation = saved


# ----------------------------------------------------------------------------------------------------
# The run


@dataclass
class PrefillSettings:
    """Everything one run depends on (main builds it from the options; gpu_check.py builds its own)."""

    decoder_layers: int = 32
    repeats: int = 3
    profiles: list[str] = field(default_factory=lambda: list(DEFAULT_PROFILES))
    dtype: DtypeChoice = field(default_factory=lambda: DtypeChoice(torch.bfloat16, "default"))
    device: str = "cpu"
    widths: str = "7b"
    warmup_pass: bool = True  # one untimed pass of everything before the timed repeats
    image: Path = ROOT / "examples" / "shapes.png"
    budget_s: float | None = None  # start no repeat that would end past it (the first always runs)
    command: str = ""


def duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} minutes"


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000.0


def paired_ratio(runs: dict[str, list[float]], num: str, den: str) -> float | None:
    if num not in runs or den not in runs:
        return None
    return round(statistics.median(x / y for x, y in zip(runs[num], runs[den])), 3)


def resolve_all(
    names: list[str], dims: Any, say: Callable[[str], None]
) -> tuple[dict[str, ResolvedProfile], list[str]]:
    """Each profile tied to the model; one the model's depth cannot realise is left out with a note (a
    profile that does not exist still fails)."""
    resolved, skipped = {}, []
    for n in names:
        profile = load_profile(n)
        try:
            resolved[n] = resolve_profile(profile, dims)
        except ProfileError as exc:
            skipped.append(n)
            say(f"left out {n}: {str(exc).split(';')[0]}")
    return resolved, skipped


def run_prefill(settings: PrefillSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark; returns the result document (main renders and writes it)."""
    started = time.perf_counter()
    device = torch.device(settings.device)
    dtype = settings.dtype.dtype
    size = torch.empty((), dtype=dtype).element_size()
    config: Any = build_config(settings.decoder_layers, settings.widths)
    say(check_memory(config, dtype, device))
    say(f"building the model ({settings.widths} widths, {settings.decoder_layers} decoder layers) ...")
    model = build_model(config, dtype, settings.device)
    params = sum(p.numel() for p in model.parameters())
    threads = torch.get_num_threads()
    say(f"built {params / 1e9:.2f} B params, {settings.dtype.name} on {device.type}; threads={threads}")
    adapter = get_adapter(model)
    dims = adapter.dims(model)
    arch = Architecture.from_config(model.config)
    asked = ["baseline", *[p for p in settings.profiles if p != "baseline"]]
    resolved, skipped = resolve_all(asked, dims, say)
    names = [n for n in asked if n in resolved]
    n0 = {n: r.tokens_per_image(dims) for n, r in resolved.items()}
    text_tokens = TEXT_BEFORE + TEXT_AFTER
    analyses = {
        n: analyze(
            arch,
            r,
            dims,
            text_tokens=text_tokens,
            after_image_tokens=TEXT_AFTER,
            bytes_per_element=size,
        )
        for n, r in resolved.items()
    }
    segments = {}
    for n, r in resolved.items():
        segs = r.segments(n0[n])
        segments[n] = [(text_tokens + c, last - first + 1) for first, last, c in segs]
    stage1_names = [n for n in names if resolved[n].vision is not None]
    stage2_names = [n for n in names if resolved[n].llm_layers]

    px = pixel_values(settings.image, dtype, settings.device)
    gen = torch.Generator().manual_seed(3)
    max_len = max(length for segs in segments.values() for length, _ in segs)
    hidden, vision_hidden = config.text_config.hidden_size, config.vision_config.hidden_size
    llm_hidden = (torch.randn(1, max_len, hidden, generator=gen) * 0.02).to(device=device, dtype=dtype)
    vis_hidden = torch.randn(1, dims.vision_tokens, vision_hidden, generator=gen).to(device, dtype)
    vis_normed = torch.nn.functional.layer_norm(vis_hidden.float(), (vision_hidden,)).to(dtype)

    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    kv: dict[str, dict[str, Any]] = {}

    def one_pass(label: str, record: bool, rotate: int = 0) -> None:
        # each profile's prefill and its floor run back to back; the profile order rotates per repeat
        for n in names[rotate:] + names[:rotate]:
            sink: dict[str, Any] = {}
            t0 = time.perf_counter()
            parts = run_profile(model, resolved[n], px, sink)
            floor = run_floor(model, segments[n], llm_hidden)
            if not sink["finite"]:
                raise RuntimeError(f"{n}: non-finite logits")
            kv[n] = sink
            if record:
                for key, value in parts.items():
                    times[n][key].append(value)
                times[n]["floor"].append(floor)
            say(f"  {label}: {n} prefill + floor {time.perf_counter() - t0:.1f}s")
        t0 = time.perf_counter()
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
        say(f"  {label}: scoring pieces and stage-1 encode variants {time.perf_counter() - t0:.1f}s")

    # what one pass costs next to the stock forward that opens the run, in FLOPs: every profile's
    # forward and floor, and the vision tower three more times (the encode variants)
    stock_flops = analyses["baseline"].prefill.actual + analyses["baseline"].vision.actual
    pass_flops = sum(analyses[n].vision.actual + 2 * analyses[n].prefill.actual for n in names)
    pass_flops += 3 * analyses["baseline"].vision.actual
    estimate: dict[str, Any] = {}
    repeats_done = 0
    stopped = None
    with torch.inference_mode():
        # the stock model, no hooks: finite logits; timed, it calibrates the estimate of the run
        ids = input_ids(dims.unreduced_tokens, device)
        say("stock forward (no hooks), timed to estimate the run ...")
        sync(device)
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=px, use_cache=True, logits_to_keep=1, return_dict=True)
        sync(device)
        stock_s = time.perf_counter() - t0
        if not torch.isfinite(out.logits).all():
            raise RuntimeError("the stock forward gives non-finite logits")
        del out
        per_pass = stock_s * pass_flops / stock_flops
        passes = settings.repeats + (1 if settings.warmup_pass else 0)
        estimate = {
            "stock_forward_s": round(stock_s, 2),
            "per_pass_s": round(per_pass, 1),
            "passes": passes,
            "run_s": round(per_pass * passes, 1),
        }
        say(
            f"stock forward {stock_s:.1f}s: estimate ~{per_pass:.0f}s per pass, {passes} passes "
            f"({'warm-up + ' if settings.warmup_pass else ''}{settings.repeats} timed), "
            f"~{duration(per_pass * passes)} from here (the first pass pays one-time costs)"
        )
        if settings.warmup_pass:
            t0 = time.perf_counter()
            one_pass("warm-up", record=False)
            say(f"warm-up pass: {time.perf_counter() - t0:.0f}s; {settings.repeats} timed repeats follow")
        last = per_pass
        for i in range(settings.repeats):
            spent = time.perf_counter() - started
            if i and settings.budget_s is not None and spent + last > settings.budget_s:
                stopped = f"time budget {settings.budget_s:.0f}s: stopped after {i} repeats"
                say(stopped)
                break
            t0 = time.perf_counter()
            one_pass(f"repeat {i + 1}/{settings.repeats}", record=True, rotate=i % len(names))
            last = time.perf_counter() - t0
            repeats_done += 1
            say(f"repeat {i + 1}/{settings.repeats}: {last:.0f}s")

    base = times["baseline"]
    base_total, base_llm = median_ms(base["total"]), median_ms(base["llm"])
    base_flops = analyses["baseline"]
    base_vision_llm_flops = base_flops.prefill.actual + base_flops.vision.actual
    rows: list[dict[str, Any]] = []
    for n in names:
        a, t = analyses[n], times[n]
        ledger_tokens = tokens_per_layer(a.ledger, text_tokens)
        ledger_bytes = kv_cache_bytes(arch.text, ledger_tokens, size).bytes
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
    return {
        "benchmark": "prefill_7b",
        "date": _dt.date.today().isoformat(),
        "command": settings.command,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "widths": settings.widths,
        "decoder_layers": settings.decoder_layers,
        "parameters": params,
        "text_tokens": text_tokens,
        "text_tokens_after_image": TEXT_AFTER,
        "repeats": repeats_done,
        "repeats_asked": settings.repeats,
        "stopped_early": stopped,
        "warmup_pass": settings.warmup_pass,
        "skipped_profiles": skipped,
        "dtype": settings.dtype.name,
        "dtype_reason": settings.dtype.reason,
        "cpu": settings.dtype.cpu or None,
        "attention": "sdpa",
        "estimate": estimate,
        "bound_convention": "actual FLOPs (duet_cli.cost.flops), prefill = decoder layers + ranking + "
        "lm_head row",
        "overhead_method": "isolated: scoring pieces timed alone on the real modules and shapes "
        "(overhead_by_difference_share: (LLM prefill - floor) / baseline prefill, for context)",
        "llm_over_floor": "median over repeats of LLM prefill / floor of the same repeat (run back to back)",
        "rows": rows,
        "encode": encode,
        "wall_s": round(time.perf_counter() - started, 1),
    }


# ----------------------------------------------------------------------------------------------------
# Rendering and the command


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"LLaVA-1.5-7B geometry ({result['widths']} widths), random {result['dtype']} weights, "
        f"{result['device']}, {result['decoder_layers']} decoder layers, {result['text_tokens']} text "
        f"tokens, median of {result['repeats']}"
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
    for r in result["rows"]:
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
    encode = result["encode"]
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
    if result["skipped_profiles"]:
        console.print(f"left out (not realisable on this depth): {', '.join(result['skipped_profiles'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (3; 1 with --quick)")
    parser.add_argument("--profiles", nargs="+", default=DEFAULT_PROFILES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{QUICK_LAYERS} decoder layers, one repeat, no warm-up pass: a smoke test of the script",
    )  # fmt: skip
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (32; 4 with --quick)")
    parser.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prefill_7b.json")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "shapes.png")
    args = parser.parse_args(argv)

    from rich.console import Console

    console = Console(width=200)
    say = Progress()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("prefill_7b.py: error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    choice = choose_dtype(args.dtype, torch.device(args.device))
    say(f"dtype {choice.name}: {choice.reason}")
    settings = PrefillSettings(
        decoder_layers=args.layers or (QUICK_LAYERS if args.quick else 32),
        repeats=args.repeats or (1 if args.quick else 3),
        profiles=args.profiles,
        dtype=choice,
        device=args.device,
        warmup_pass=not args.quick,
        image=args.image,
        command=" ".join(["python", "benchmarks/prefill_7b.py", *(argv or sys.argv[1:])]),
    )
    try:
        result = run_prefill(settings, say)
    except DoesNotFit as exc:
        print(f"prefill_7b.py: error: {exc}", file=sys.stderr)
        return 1
    render(result, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out} ({result['wall_s']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
