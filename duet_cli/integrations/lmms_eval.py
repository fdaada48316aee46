"""`lmms-eval --model duet`: lmms-eval's simple-model contract answered by duet's engine, batched, under
one reduction profile. Loaded only by lmms-eval's model registry (the `lmms_eval.models` entry point in
pyproject.toml names this class by path), so nothing in duet imports lmms-eval.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from duet_cli.errors import DuetError, InputError, UsageError

DEFAULT_MAX_NEW_TOKENS = 1024  # what lmms-eval's own HF models generate when a task sets no limit
# task generation_kwargs passed on to generate(); duet reads until / max_new_tokens / temperature /
# top_p / num_beams / do_sample itself, and anything else (a task's own keys) is ignored with a warning
GENERATE_KEYS = ("top_k", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "min_new_tokens")
OWN_KEYS = ("until", "max_new_tokens", "temperature", "top_p", "num_beams", "do_sample")
LOGLIKELIHOOD_REFUSAL = (
    "duet: loglikelihood requests (multiple-choice-by-likelihood tasks) are not supported: stage 2 ranks "
    "the visual tokens by the attention of the prompt's last token, so scoring a continuation would rank "
    "by the continuation instead; use the task's generate_until variant"
)


@dataclass
class DuetTokenCounts(TokenCounts):
    """What the profile kept for one request, in lmms-eval's per-request token record (`--log_samples`
    writes it as the sample's `token_counts`). The text counts (`input_tokens`, `output_tokens`) stay
    unset: duet's run() does not return them, and re-tokenizing the decoded answer miscounts."""

    profile: str | None = None
    avg_visual_tokens: float | None = None  # the trace's per-layer average (what papers report)
    visual_tokens_in: int | None = None  # entering the language model, after stage 1
    unreduced_visual_tokens: int | None = None  # what the stock model would feed it

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, Any] = super().to_dict()
        counts.update(
            duet_profile=self.profile,
            avg_visual_tokens=self.avg_visual_tokens,
            visual_tokens_in=self.visual_tokens_in,
            unreduced_visual_tokens=self.unreduced_visual_tokens,
        )
        return counts


@dataclass
class _Settings:
    """One group of requests' generation settings, from the task's generation_kwargs."""

    until: list[str]
    max_new_tokens: int
    num_beams: int
    do_sample: bool
    temperature: float
    top_p: float
    extra: dict[str, Any]


class DuetLMMs(lmms):
    """A duet model for lmms-eval: `--model duet --model_args pretrained=...,profile=...`.

    model_args: `pretrained` (catalog name, local folder or hub id; default: duet's default model),
    `profile` (shipped name or YAML file; default: the model card's), `dtype`, `device` (duet's values,
    `auto` by default), `batch_size` (or `--batch_size`; model_args win), `max_new_tokens` (used when
    a task sets none), `seed`, `frames` (video; alias `max_frames_num`), `min_pixels` / `max_pixels`
    (Qwen2.5-VL), `chat_template` / `image_aspect` (as duet's options of those names). Under
    `accelerate launch` / `torchrun` each rank takes its local GPU.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        profile: str | None = None,
        dtype: str = "auto",
        device: str | None = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        seed: int = 0,
        frames: int = 8,
        max_frames_num: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        chat_template: str | None = None,
        image_aspect: str | None = None,
        max_batch_size: int | None = None,  # lmms-eval passes it with --batch_size auto; duet has no auto
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise UsageError(_unknown_args(unknown))
        from duet_cli.evaluate.distributed import Ranks, device_for
        from duet_cli.gen_settings import check_seed
        from duet_cli.profiles import load_profile, resolve_profile
        from duet_cli.runtime import load_model

        self.batch_size_per_gpu = _positive_int(batch_size, "batch_size")
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.frames = _positive_int(frames if max_frames_num is None else max_frames_num, "frames")
        self.seed = check_seed(int(seed))
        # lmms-eval shards the requests by RANK / WORLD_SIZE; each rank binds its own GPU
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self._rank = int(os.environ.get("RANK", "0"))
        self._world_size = world
        ranks = Ranks(self._rank, world, int(os.environ.get("LOCAL_RANK", "0")))
        chosen = load_profile(str(profile)) if profile is not None else None  # a typo fails before loading
        # passed only when given, as `duet`'s --chat-template / --image-aspect
        prompt_options: dict[str, Any] = {
            k: str(v)
            for k, v in (("chat_template", chat_template), ("image_aspect", image_aspect))
            if v is not None
        }
        self.loaded = load_model(
            None if pretrained is None else str(pretrained),
            dtype=str(dtype),
            device=device_for(ranks, str(device or "auto")),
            min_pixels=None if min_pixels is None else int(min_pixels),
            max_pixels=None if max_pixels is None else int(max_pixels),
            **prompt_options,
        )
        chosen = chosen or load_profile(self.loaded.default_profile)
        self.profile = resolve_profile(chosen, self.loaded.adapter.dims(self.loaded.model))
        self._warned: set[str] = set()
        logger.info(
            f"duet: {self.loaded.name} under profile {self.profile.name} ({self.profile.hash}), "
            f"{str(self.loaded.dtype).removeprefix('torch.')} on {self.loaded.device}, "
            f"batch size {self.batch_size_per_gpu}"
        )

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> Any:
        """model_args plus the CLI's --batch_size / --device; a value given in model_args wins (the CLI
        always passes its default --batch_size 1, which would otherwise collide with batch_size=)."""
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> Any:
        return self.loaded.device

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(LOGLIKELIHOOD_REFUSAL)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("duet: multi-round generation is not supported; use a single-turn task")

    def generate_until(self, requests: list[Instance]) -> list[Any]:
        """Answer every request under the profile: grouped by generation settings, longest prompt first
        within a group, `batch_size` at a time; results come back in request order."""
        from duet_cli.engine.session import apply_profile

        out: list[Any] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        kept: list[float] = []
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding")
        with apply_profile(self.loaded.model, self.profile) as session:
            for members in groups.values():
                settings = self._settings(requests[members[0]].args[1])
                members.sort(key=lambda i: -len(str(requests[i].args[0])))
                for start in range(0, len(members), self.batch_size_per_gpu):
                    chunk = members[start : start + self.batch_size_per_gpu]
                    for i, result in zip(
                        chunk, self._answer(session, [requests[i] for i in chunk], settings)
                    ):
                        out[i] = result
                        if result.token_counts is not None:
                            kept.append(result.token_counts.avg_visual_tokens)
                        self.cache_hook.add_partial("generate_until", requests[i].args[:2], result.text)
                    bar.update(len(chunk))
        bar.close()
        if kept:
            logger.info(
                f"duet: {len(kept)} of {len(requests)} requests answered under {self.profile.name}, "
                f"average visual tokens {sum(kept) / len(kept):.2f}"
            )
        return out

    # -- one batch ------------------------------------------------------------------------------------

    def _answer(self, session: Any, batch: Sequence[Instance], settings: _Settings) -> list[Any]:
        """GenerationResults for one batch; a request whose media duet refuses answers "" (as a failed
        record scores in `duet eval`), with a warning naming its document."""
        from duet_cli.runtime import run

        results: list[Any] = [None] * len(batch)
        prompts, where = [], []
        for k, req in enumerate(batch):
            try:
                prompts.append(self._prompt(req))
                where.append(k)
            except InputError as exc:
                self._refuse(req, exc)
                results[k] = GenerationResult(text="")
        if not prompts:
            return results
        try:
            result = run(
                self.loaded, session, prompts, max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams, do_sample=settings.do_sample,
                temperature=settings.temperature, top_p=settings.top_p, seed=self.seed, **settings.extra,
            )  # fmt: skip
        except InputError as exc:
            if len(prompts) == 1:
                self._refuse(batch[where[0]], exc)
                results[where[0]] = GenerationResult(text="")
                return results
            for k in where:  # find the request that failed: each one alone
                results[k] = self._answer(session, [batch[k]], settings)[0]
            return results
        for k, answer, sample in zip(where, result.answers, result.trace.samples, strict=True):
            counts = DuetTokenCounts(
                profile=self.profile.name,
                avg_visual_tokens=sample.avg_visual_tokens,
                visual_tokens_in=sample.visual_tokens_in,
                unreduced_visual_tokens=sample.unreduced_visual_tokens,
            )
            results[k] = GenerationResult(text=_cut(answer, settings.until), token_counts=counts)
        return results

    def _prompt(self, req: Instance) -> Any:
        """A duet Prompt from a request: its context (image placeholders removed: duet writes them
        where the chat template puts them) and its document's images and videos."""
        from PIL import Image

        from duet_cli.inputs.media import check_image
        from duet_cli.inputs.video import load_video
        from duet_cli.runtime import Prompt

        context, _, doc_to_visual, doc_id, task, split = req.args
        question = str(context)
        for placeholder in self.loaded.adapter.placeholders:
            question = question.replace(placeholder, "")
        question = question.strip()
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if callable(doc_to_visual) else []
        images, videos = [], []
        for item in _flatten(visuals or []):
            if isinstance(item, Image.Image):
                try:
                    item.load()
                    image = item if item.mode == "RGB" else item.convert("RGB")
                except (OSError, ValueError, SyntaxError) as exc:
                    raise InputError(f"unreadable image in the dataset: {exc}") from None
                check_image(image)
                images.append(image)
            elif isinstance(item, (str, os.PathLike)):
                if "video" not in self.loaded.adapter.modalities:
                    raise InputError(f"model {self.loaded.name} takes images only, not video ({item})")
                videos.append(load_video(item, self.frames))
            else:
                raise InputError(f"duet takes images and video files, not {type(item).__name__}")
        if not question:
            raise InputError("the question is empty")
        return Prompt(question, images, videos)

    def _refuse(self, req: Instance, exc: DuetError) -> None:
        logger.warning(f"duet: {req.args[4]} document {req.args[3]} answered '' (not run): {exc}")

    def _settings(self, gen_kwargs: dict[str, Any] | None) -> _Settings:
        gen = dict(gen_kwargs or {})
        until = gen.get("until") or []
        until = [until] if isinstance(until, str) else [str(u) for u in until]
        # as lmms-eval's HF models: a temperature above 0 samples, 0 (or none) decodes greedily
        temperature = float(gen.get("temperature") or 0.0)
        do_sample = temperature > 0
        top_p = gen.get("top_p")
        extra = {k: gen[k] for k in GENERATE_KEYS if gen.get(k) is not None}
        ignored = sorted(k for k in gen if k not in OWN_KEYS and k not in GENERATE_KEYS)
        if ignored and repr(ignored) not in self._warned:
            self._warned.add(repr(ignored))
            logger.warning(f"duet: generation_kwargs {', '.join(ignored)} ignored (not generation settings)")
        return _Settings(
            until=[u for u in until if u],
            max_new_tokens=_positive_int(gen.get("max_new_tokens") or self.max_new_tokens, "max_new_tokens"),
            num_beams=_positive_int(gen.get("num_beams") or 1, "num_beams"),
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=float(top_p) if do_sample and top_p is not None else 1.0,
            extra=extra,
        )


def _cut(text: str, until: Sequence[str]) -> str:
    """The answer up to its first stop sequence."""
    for stop in until:
        text = text.split(stop, 1)[0]
    return text.strip()


def _flatten(visuals: Any) -> list[Any]:
    items: list[Any] = []
    for item in visuals if isinstance(visuals, (list, tuple)) else [visuals]:
        items.extend(_flatten(item) if isinstance(item, (list, tuple)) else [item])
    return items


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, str) and value.strip().lower().startswith("auto"):
        raise UsageError(f"--model duet: {name}={value}: duet has no automatic batch size; give a number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and value != number):
        raise UsageError(f"--model duet: {name}={value!r} must be a whole number of at least 1")
    return number


def _unknown_args(unknown: dict[str, Any]) -> str:
    import inspect

    known = [p for p in inspect.signature(DuetLMMs.__init__).parameters if p not in ("self", "unknown")]
    parts = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"'{name}'" + (f" (did you mean: {close[0]}?)" if close else ""))
    return f"--model duet: unknown model_args {', '.join(parts)}. Available: {', '.join(known)}"
