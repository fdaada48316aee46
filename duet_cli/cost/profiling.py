"""What `duet profile` computes: per profile, FLOPs in two conventions and KV-cache bytes (from the
architecture numbers and the token ledger), and measured vision / prefill / decode times and peak memory.

`analyze` is pure arithmetic (see duet_cli/cost/flops.py); `profile_config_only` needs no weights and no
torch; `profile_measured` loads the model once and runs every profile on it. Dynamic-resolution families
(Qwen2.5-VL): the vision arithmetic is for the image's own patch grid, which the image processor gives
in a measured run; config-only uses the reference image of duet_cli.dims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duet_cli.cost.flops import (
    Architecture,
    FlopPair,
    KvCache,
    PrefillFlops,
    VisionFlops,
    decode_step_flops,
    kv_cache_bytes,
    prefill_flops,
    stage2_ranking_flops,
    tokens_per_layer,
    vision_flops,
)
from duet_cli.cost.flops_vision import Grid
from duet_cli.dims import ModelDims
from duet_cli.errors import HookError, UsageError
from duet_cli.profiles import ResolvedProfile

DEFAULT_QUESTION = "What shapes are in this image, and what colors are they?"
# Without a tokenizer (--config-only) the prompt's text tokens are assumed: BOS + the LLaVA-1.5 chat
# template "USER: <image>\n{question} ASSISTANT:" around a question of about a dozen words.
DEFAULT_TEXT_TOKENS = 24
CONFIG_ONLY_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}  # checkpoints ship in 16 bit


@dataclass
class Analysis:
    """The arithmetic of one profile on one model for a batch of identical one-image prompts."""

    profile: str
    hash: str
    tokens_in: int  # N0 per sample
    unreduced: int  # what the stock model feeds the LLM per sample
    ledger: list[int]  # visual tokens per decoder layer, per sample
    text_tokens: int  # per sample
    batch: int
    vision: VisionFlops  # per sample
    prefill: PrefillFlops  # per sample
    decode: FlopPair  # per sample, one step right after prefill
    kv: KvCache  # per sample

    @property
    def avg_visual_tokens(self) -> float:
        return sum(self.ledger) / len(self.ledger)


DEFAULT_FRAMES = 8  # a video card's --config-only arithmetic is for one clip of this many frames


def query_rows(resolved: ResolvedProfile, tokens: int, after_image: int) -> int:
    """Query rows stage 2 ranks with; `salient` is bounded above by the tokens after the image."""
    if resolved.queries == "last":
        return 1
    if resolved.queries == "all":
        return tokens
    return after_image


def analyze(
    arch: Architecture,
    resolved: ResolvedProfile,
    dims: ModelDims,
    *,
    text_tokens: int,
    after_image_tokens: int,
    bytes_per_element: int,
    batch: int = 1,
    ledger: Sequence[int] | None = None,
    frames: int = 0,
    grid: Grid | None = None,
    unreduced: int | None = None,
) -> Analysis:
    """FLOPs and KV bytes of `resolved`; `ledger` defaults to the profile's arithmetic for one image, or
    for a clip of `frames` frames (video families: every frame goes through the tower and stage 1).
    `grid` is the image's patch grid (default: the tower's reference grid) and `unreduced` what the stock
    model feeds the LLM for it (default: the dims' count); a measured run passes both for its image."""
    if frames:
        vision_cfg = resolved.vision
        per_unit = vision_cfg.tokens if vision_cfg is not None else dims.unreduced_frame_tokens
        stock = frames * dims.unreduced_frame_tokens
    else:
        per_unit, stock = resolved.tokens_per_image(dims), dims.unreduced_tokens
    units = frames or 1
    visual = list(ledger) if ledger is not None else resolved.ledger(per_unit * units)
    n0 = visual[0]
    image_grid = grid if grid is not None else arch.vision.reference_grid()
    scoring = 0
    cfg: Any = resolved.vision
    # VisionZip scores with the encoder's own q/k; other stage-1 methods (pooling, random) add no products
    if cfg is not None and getattr(cfg, "method", None) == "visionzip":
        # counts asked of this image (budget-relative ones are shares of its tokens); the tower clamps them
        dominant, contextual = cfg.counts_for(arch.vision.stage1_tokens(image_grid))
        scoring = arch.vision.stage1_scoring_flops(
            image_grid,
            dominant=dominant,
            contextual=contextual,
            mode=str(getattr(cfg, "contextual_mode", "uniform")),
            cluster_width=int(getattr(cfg, "cluster_width", None) or 1),
        )
    ranking = 0
    for layer in resolved.llm_layers:  # tokens entering the layer after the drop point, before the drop
        tokens = text_tokens + visual[layer - 1]
        rows = query_rows(resolved, tokens, after_image_tokens)
        ranking += stage2_ranking_flops(arch.text, tokens=tokens, query_rows=rows)
    per_layer = tokens_per_layer(visual, text_tokens)
    return Analysis(
        profile=resolved.name,
        hash=resolved.hash,
        tokens_in=n0,
        unreduced=stock if unreduced is None else unreduced,
        ledger=visual,
        text_tokens=text_tokens,
        batch=batch,
        vision=vision_flops(
            arch,
            images=units,
            tokens_to_llm_per_image=n0 // units,
            scoring_per_image=scoring,
            grid=image_grid,
        ),
        prefill=prefill_flops(arch.text, visual, text_tokens, ranking=ranking),
        decode=decode_step_flops(arch.text, per_layer),
        kv=kv_cache_bytes(arch.text, per_layer, bytes_per_element),
    )


@dataclass
class Measured:
    vision_ms: list[float]
    prefill_ms: list[float]
    decode_ms_per_token: list[float]
    peak_memory_bytes: int | None  # CUDA max_memory_allocated; None on other devices


@dataclass
class ProfileRow:
    analysis: Analysis
    measured: Measured | None = None


@dataclass
class ProfileReport:
    model: str
    config_only: bool
    untrained: bool
    rows: list[ProfileRow]
    batch: int
    text_tokens: int
    text_tokens_source: str  # "tokenizer" | "assumed" | "--text-tokens"
    bytes_per_element: int
    num_layers: int
    repeats: int = 0
    warmup: int = 0
    max_new_tokens: int = 0
    image: str | None = None
    question: str | None = None
    device: str | None = None
    dtype: str | None = None
    frames: int = 0  # video families (--config-only): the arithmetic is for one clip of this many frames
    image_grid: Grid | None = None  # (t, h, w) patches of the vision arithmetic's image (or frame)
    image_grid_source: str = "fixed"  # "fixed" (the tower's one grid) | "reference" | "image" (its own)
    process_max_rss_bytes: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def with_baseline(names: Sequence[str]) -> list[str]:
    """The requested profiles, deduplicated in order, with `baseline` first."""
    out = ["baseline"]
    for n in names:
        if n not in out:
            out.append(n)
    return out


def resolve_all(names: Sequence[str], dims: ModelDims) -> list[ResolvedProfile]:
    from duet_cli.profiles import load_profile, resolve_profile

    return [resolve_profile(load_profile(n), dims) for n in with_baseline(names)]


def _arch_for(spec: str) -> Architecture:
    """Architecture numbers from a catalog card, else from the model's config.json (no weights)."""
    from duet_cli.catalog import get_card, list_cards, resolve_model
    from duet_cli.errors import ModelNotFoundError

    if spec in {c.name for c in list_cards()}:
        card = get_card(spec)
        return Architecture.from_card(card.architecture, card.family)
    resolved = resolve_model(spec)
    if resolved.card is not None:
        return Architecture.from_card(resolved.card.architecture, resolved.card.family)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.source, local_files_only=resolved.local_files_only)
        return Architecture.from_config(config)
    except Exception as exc:  # one line, whatever transformers raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot read the architecture of model {spec!r}: {first}") from exc


def profile_config_only(
    model: str,
    profiles: Sequence[str],
    *,
    text_tokens: int | None = None,
    dtype: str = "auto",
    batch: int = 1,
) -> ProfileReport:
    """The analytic part only: architecture numbers from the card or config, ledgers from the profiles."""
    from duet_cli.catalog import default_model, dims_for

    spec = model or default_model()
    if dtype not in CONFIG_ONLY_BYTES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(CONFIG_ONLY_BYTES)}")
    dims = dims_for(spec)
    resolved = resolve_all(profiles, dims)
    arch = _arch_for(spec)
    n_text = DEFAULT_TEXT_TOKENS if text_tokens is None else text_tokens
    bpe = CONFIG_ONLY_BYTES[dtype]
    frames = DEFAULT_FRAMES if dims.unreduced_frame_tokens else 0  # video families: one clip
    rows = [
        ProfileRow(
            analyze(
                arch,
                r,
                dims,
                text_tokens=n_text,
                after_image_tokens=n_text,
                bytes_per_element=bpe,
                batch=batch,
                frames=frames,
            )
        )
        for r in resolved
    ]
    return ProfileReport(
        model=spec,
        config_only=True,
        untrained=False,
        rows=rows,
        batch=batch,
        text_tokens=n_text,
        text_tokens_source="assumed" if text_tokens is None else "--text-tokens",
        bytes_per_element=bpe,
        num_layers=dims.num_layers,
        frames=frames,
        image_grid=arch.vision.reference_grid(),
        image_grid_source="reference" if dims.dynamic_resolution else "fixed",
    )


def _text_tokens(loaded: Any, question: str) -> tuple[int, int]:
    """(text tokens of the prompt, of them after the image block) with the model's own tokenizer."""
    text, _ = loaded.chat.prompt(loaded, question, [1])
    ids = list(loaded.tokenizer(text)["input_ids"])
    image_id = loaded.adapter.image_token_id(loaded.model)
    if image_id not in ids:
        raise UsageError("the chat template has no image placeholder")
    return len(ids) - 1, len(ids) - 1 - ids.index(image_id)


def _image_grid(loaded: Any, image: Any) -> Grid:
    """The (t, h, w) patch grid the image processor gives `image`, as the run feeds it to the tower
    (dynamic-resolution families; the profile runs use the processor's default pixel range)."""
    thw = loaded.adapter.pixel_inputs(loaded.processor, [image], [])["image_grid_thw"]
    t, h, w = (int(x) for x in thw[0].tolist())
    return (t, h, w)


def _max_rss_bytes() -> int | None:
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def profile_measured(
    model: str | None,
    profiles: Sequence[str],
    *,
    image: Path,
    question: str,
    batch: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    max_new_tokens: int = 8,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    chat_template: str | None = None,
    image_aspect: str | None = None,
    on_loaded: Callable[[int], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ProfileReport:
    """Load the model once; for each profile run `warmup + repeats` generations of `batch` identical
    prompts, keep the timings of the last `repeats`, and attach the arithmetic of the measured ledger.
    `on_loaded(total_steps)` fires once the model is loaded, `on_step(profile)` after every generation."""
    import torch

    from duet_cli.engine.session import apply_profile
    from duet_cli.gen_settings import check_rows
    from duet_cli.inputs.media import load_image
    from duet_cli.profiles import load_profile, resolve_profile
    from duet_cli.reports.jsonio import provenance
    from duet_cli.runtime import Prompt, check_question, load_model, run

    if repeats < 1 or warmup < 0 or batch < 1 or max_new_tokens < 1:
        raise UsageError("--repeats, --batch-size and --max-new-tokens must be >= 1, --warmup >= 0")
    check_rows(batch, 1)  # before the model loads: 100,000 identical prompts would exhaust memory
    check_question(question)
    pil = load_image(image)
    names = with_baseline(profiles)
    chosen = [load_profile(n) for n in names]  # a typo fails before the model loads
    loaded = load_model(
        model, dtype=dtype, device=device, chat_template=chat_template, image_aspect=image_aspect
    )
    dims = loaded.adapter.dims(loaded.model)
    resolved = [resolve_profile(p, dims) for p in chosen]
    arch = Architecture.from_config(loaded.model.config)
    grid = _image_grid(loaded, pil) if dims.dynamic_resolution else arch.vision.reference_grid()
    n_text, after_image = _text_tokens(loaded, question)
    bpe = torch.empty((), dtype=loaded.dtype).element_size()
    prompts = [Prompt(question, [pil]) for _ in range(batch)]
    cuda = loaded.device.type == "cuda"
    if on_loaded is not None:
        on_loaded(len(resolved) * (warmup + repeats))
    rows: list[ProfileRow] = []
    for r in resolved:
        measured = Measured([], [], [], None)
        ledger: list[int] | None = None
        unreduced: int | None = None
        with apply_profile(loaded.model, r) as session:
            if cuda:
                torch.cuda.reset_peak_memory_stats(loaded.device)
            for i in range(warmup + repeats):
                result = run(
                    loaded,
                    session,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens,  # equal decode lengths across profiles
                    seed=seed,
                )
                if i >= warmup:
                    t = result.trace.timings
                    measured.vision_ms.append(t.vision_s * 1000.0)
                    measured.prefill_ms.append(t.prefill_s * 1000.0)
                    if t.decode_steps:
                        measured.decode_ms_per_token.append(t.decode_s * 1000.0 / t.decode_steps)
                    ledger = list(result.trace.samples[0].ledger)
                    unreduced = result.trace.samples[0].unreduced_visual_tokens
                if on_step is not None:
                    on_step(r.name)
            if cuda:
                measured.peak_memory_bytes = int(torch.cuda.max_memory_allocated(loaded.device))
        if dims.dynamic_resolution and unreduced != arch.vision.stage1_tokens(grid):
            raise HookError(  # the arithmetic's grid must be the one the run fed the tower
                f"the run fed {unreduced} image tokens to the LLM, but the image grid {grid} has "
                f"{arch.vision.stage1_tokens(grid)}"
            )
        analysis = analyze(
            arch,
            r,
            dims,
            text_tokens=n_text,
            after_image_tokens=after_image,
            bytes_per_element=bpe,
            batch=batch,
            ledger=ledger,
            grid=grid,
            unreduced=unreduced,
        )
        rows.append(ProfileRow(analysis, measured))
    dtype_name = str(loaded.dtype).removeprefix("torch.")
    prov = provenance(
        profile_name=",".join(names),
        profile_hash=",".join(r.hash for r in resolved),
        profile={p.name: p.to_dict() for p in chosen},  # names, not paths: YAML files are profiles too
        model=loaded.name,
        dtype=dtype_name,
        device=str(loaded.device),
        seed=seed,
    )
    prov |= loaded.prompting()
    return ProfileReport(
        model=loaded.name,
        config_only=False,
        untrained=loaded.untrained,
        rows=rows,
        batch=batch,
        text_tokens=n_text,
        text_tokens_source="tokenizer",
        bytes_per_element=bpe,
        num_layers=dims.num_layers,
        repeats=repeats,
        warmup=warmup,
        max_new_tokens=max_new_tokens,
        image=str(image),
        question=question,
        device=str(loaded.device),
        dtype=dtype_name,
        image_grid=grid,
        image_grid_source="image" if dims.dynamic_resolution else "fixed",
        process_max_rss_bytes=None if cuda else _max_rss_bytes(),
        provenance=prov,
    )
