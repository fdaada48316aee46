"""vLLM plugin: VisionZip (stage 1) on LLaVA-1.5 served by vLLM; the `vllm.general_plugins` entry point.

This module is what vLLM imports in every process at start-up, so it stays light: the profile plan and
the token reduction here need only torch, pydantic and pyyaml (duet's profile validation and its pure
selection functions, never transformers: vLLM pins an older transformers than duet's range). The vLLM
model class lives in `vllm_llava.py` and is registered by path, so vLLM imports it only when it builds
a model with that architecture.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from duet_cli.errors import ProfileError, UnsupportedSetupError

if TYPE_CHECKING:
    import torch

    from duet_cli.methods.visionzip.select import Stage1Selection
    from duet_cli.profiles import Profile

ARCH = "DuetLlavaForConditionalGeneration"  # always registered; a model config selects it by name
STOCK_ARCH = "LlavaForConditionalGeneration"  # taken over only when DUET_VLLM_PROFILE is set
MODEL_CLASS = "duet_cli.integrations.vllm_llava:DuetLlavaForConditionalGeneration"
PROFILE_ENV = "DUET_VLLM_PROFILE"
PROFILE_FIELD = "duet_profile"  # the model-config field (config.json or --hf-overrides) naming the profile
TRACE_ENV = "DUET_VLLM_TRACE"  # a JSONL file: one line per image, the kept and target token indices
NO_LLM_STAGE = (
    "the vLLM plugin runs stage 1 only: vLLM runs one token batch and one attention metadata for all "
    "decoder layers, so per-layer drops have no place; use a vision-only profile (visionzip-64, "
    "visionzip-128, visionzip-192)"
)


def register() -> None:
    """The entry point: vLLM calls it in each process before it builds a model. A profile named by the
    environment that the plugin cannot run stops the server here, with one line on stderr."""
    from vllm import ModelRegistry  # type: ignore[import-not-found]

    name = os.environ.get(PROFILE_ENV)
    if name:
        from duet_cli.profiles import load_profile

        try:
            check_profile(load_profile(name))
        except ProfileError as e:
            print(f"duet: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None  # vLLM logs and skips a plugin's Exception; this must stop it
    ModelRegistry.register_model(ARCH, MODEL_CLASS)
    if name:
        ModelRegistry.register_model(STOCK_ARCH, MODEL_CLASS)


def check_profile(profile: Profile) -> None:
    """What the plugin refuses whatever the model: an LLM stage, a stage-1 method other than visionzip."""
    if profile.llm is not None:
        raise ProfileError(
            f"duet profile {profile.name}: it has an LLM stage ({profile.llm.summary()}); {NO_LLM_STAGE}"
        )
    if profile.vision is not None and profile.vision.method != "visionzip":
        raise ProfileError(
            f"duet profile {profile.name}: stage-1 method {profile.vision.method!r}; "
            "the vLLM plugin runs visionzip only"
        )


@dataclass(frozen=True)
class Stage1Plan:
    """What the plugin does to every image: `dominant + contextual` tokens of `vision_tokens` (CLS
    included) reach the projector; `reduce` False is the baseline profile (the stock 576 patches)."""

    profile: str
    reduce: bool
    dominant: int
    contextual: int
    mode: str
    cluster_width: int
    vision_tokens: int
    unreduced: int

    @property
    def tokens(self) -> int:
        return self.dominant + self.contextual if self.reduce else self.unreduced

    def describe(self) -> str:
        if not self.reduce:
            return f"duet: profile {self.profile}: no stage 1, {self.unreduced} image tokens per image"
        how = f"{self.dominant}+{self.contextual} {self.mode}"
        if self.mode == "pooled":
            how += f" w={self.cluster_width}"
        return (
            f"duet: profile {self.profile} (visionzip {how}): {self.tokens} image tokens per image "
            f"instead of {self.unreduced}"
        )


def profile_name(hf_config: Any) -> str:
    """The profile a model runs under: the model-config field, else the environment variable."""
    name = getattr(hf_config, PROFILE_FIELD, None) or os.environ.get(PROFILE_ENV)
    if not name:
        raise ProfileError(
            f"duet vLLM plugin: no profile; set {PROFILE_ENV}=visionzip-64 (or any vision-only profile) "
            f"or the model-config field {PROFILE_FIELD!r} (e.g. --hf-overrides "
            f'\'{{"{PROFILE_FIELD}": "visionzip-64"}}\')'
        )
    return str(name)


def plan_for(hf_config: Any) -> Stage1Plan:
    """Validate the chosen profile against a LLaVA config; one ProfileError line when it cannot run."""
    from duet_cli.dims import dims_from_config
    from duet_cli.profiles import load_profile, resolve_profile

    name = profile_name(hf_config)
    profile = load_profile(name)
    check_profile(profile)
    if getattr(hf_config, "model_type", None) != "llava":
        raise UnsupportedSetupError(
            f"duet vLLM plugin: model_type {getattr(hf_config, 'model_type', None)!r} is not supported "
            "(LLaVA-1.5 only)"
        )
    vc = hf_config.vision_config
    if getattr(vc, "model_type", None) != "clip_vision_model":
        raise UnsupportedSetupError(
            f"duet vLLM plugin: a LLaVA with a {getattr(vc, 'model_type', None)!r} tower; "
            "stage 1 needs a CLIP tower"
        )
    if not isinstance(hf_config.vision_feature_layer, int):
        raise UnsupportedSetupError(
            f"duet vLLM plugin: vision_feature_layer={hf_config.vision_feature_layer!r}; "
            "stage 1 needs one layer"
        )
    dims = dims_from_config(hf_config)
    resolved = resolve_profile(profile, dims)
    vision = resolved.vision
    base: dict[str, Any] = dict(
        profile=profile.name, vision_tokens=dims.vision_tokens, unreduced=dims.unreduced_tokens
    )
    if vision is None:
        return Stage1Plan(reduce=False, dominant=0, contextual=0, mode="uniform", cluster_width=1, **base)
    cfg: Any = vision
    return Stage1Plan(
        reduce=True,
        dominant=cfg.dominant,
        contextual=cfg.contextual,
        mode=cfg.contextual_mode,
        cluster_width=cfg.cluster_width or 1,
        **base,
    )


def reduce_clip_tokens(
    hidden: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    heads: int,
    scale: float,
    plan: Stage1Plan,
) -> tuple[torch.Tensor, Stage1Selection]:
    """VisionZip on one batch of CLIP feature-layer tokens, scored from that layer's own projections.

    hidden: (B, N, D) the feature layer's output (CLS first); q, k: (B, N, D) the same layer's query
    and key projections. Returns the (B, dominant + contextual, D) tokens for the projector, exactly
    as duet's engine computes them (duet_cli/engine/stage1.py) from the transformers tower.
    """
    from duet_cli.methods.visionzip.select import scores_from_projections, select_and_merge

    scores, key_mean = scores_from_projections(q, k, heads, scale)
    return select_and_merge(
        hidden,
        scores,
        key_mean,
        dominant=plan.dominant,
        contextual=plan.contextual,
        mode=plan.mode,
        cluster_width=plan.cluster_width,
        has_cls=True,
    )


def rename_checkpoint_key(name: str) -> str:
    """A LLaVA checkpoint's parameter name as vLLM's modules spell it: transformers >= 4.52 nests the
    parts under `model.`; transformers 5 saves the CLIP tower without its `vision_model.` level."""
    for old, new in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("lm_head.", "language_model.lm_head."),
    ):
        if name.startswith(old):
            name = new + name[len(old) :]
            break
    if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
        name = "vision_tower.vision_model." + name[len("vision_tower.") :]
    return name
