"""Which chat template a model's prompts are written with, and writing them.

The template, first found wins:

1. `--chat-template FILE|STRING` (a Jinja chat template, or duet's own `<image>`/`{question}` form);
2. the checkpoint's own: the processor's `chat_template`, else the tokenizer's (the Hugging Face
   convention: what `processor.apply_chat_template` renders);
3. the catalog card's `chat_template` (duet's form);
4. the family default (duet's form).

A Jinja template is rendered by the processor's (or tokenizer's) own `apply_chat_template` on messages
with image/video parts and the question as text, exactly as a user of the stock pipeline would; then
each media marker the template wrote (LLaVA `<image>`, Video-LLaVA `<image>`/`<video>`, Qwen2.5-VL
`<|image_pad|>`/`<|video_pad|>`: the family's `media_markers`) becomes that image's or video's
placeholder count, in order, as the stock processor expands them (duet's counts being what stage 1
emits). The question is rendered as a sentinel and put back afterwards, so its offset is known for
text-guided queries; a template that rewrites the question text is refused when loaded.

Training renders a whole conversation the same way; an assistant turn is the text the template adds
for that message (the rendering of messages[:2k+2] minus that of messages[:2k+1] with the generation
prompt, surrounding whitespace left out). A turn the template closes without a special token gets the
tokenizer's eos, so that a fine-tuned model learns to stop.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duet_cli.errors import UsageError
from duet_cli.inputs.userfiles import PROFILE_BYTES, read_text

SENTINEL = "\ue000duet-question\ue001"  # private-use code points: no tokenizer or user writes these
PROBE_QUESTION = "What is in the picture?"


@dataclass
class ChatTemplate:
    """A model's chat template: `jinja` (Hugging Face convention) or `text` (duet's form)."""

    source: str  # where it came from, as the footer and provenance say it
    jinja: str | None = None
    text: str | None = None  # duet's form: "USER: <image>\n{question} ASSISTANT:"
    system: str | None = None  # a system message (Jinja templates; duet's form edits `text` instead)
    _rendered: dict[tuple[int, int], str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return "jinja" if self.jinja is not None else "duet"

    @property
    def body(self) -> str:
        return self.jinja if self.jinja is not None else self.text or ""

    def describe(self) -> dict[str, Any]:
        """The provenance entry: where the template came from, its kind and a digest of its text."""
        import hashlib

        entry = {
            "source": self.source,
            "kind": self.kind,
            "sha256": hashlib.sha256(self.body.encode()).hexdigest()[:16],
        }
        return entry | ({"system": self.system} if self.system is not None else {})

    def with_system(self, system: str) -> ChatTemplate:
        """This template with a system message (Jinja: rendered by the template itself)."""
        assert self.jinja is not None
        return ChatTemplate(self.source, jinja=self.jinja, system=system)

    # -- single-turn prompts ----------------------------------------------------------------------
    def prompt(
        self, loaded: Any, question: str, counts: Sequence[int], video_counts: Sequence[int] = ()
    ) -> tuple[str, int]:
        """The prompt for one question with images (`counts`: placeholders per image) and videos, and
        the character offset where the question starts."""
        adapter = loaded.adapter
        if self.jinja is None:
            template = self.text or ""
            if hasattr(adapter, "build_prompt_counts"):  # per-image counts (dynamic resolution)
                built: tuple[str, int] = adapter.build_prompt_counts(template, question, counts, video_counts)
                return built
            per_image = counts[0] if counts else 0
            return adapter.build_prompt(template, question, len(counts), per_image, video_tokens=video_counts)
        rendered = self._render_question(loaded, len(counts), len(video_counts))
        expanded, _ = expand_markers(rendered, adapter.media_markers, counts, video_counts, self.source)
        head, _, tail = expanded.partition(SENTINEL)
        return head + question + tail, len(head)

    def _render_question(self, loaded: Any, n_images: int, n_videos: int) -> str:
        """The rendered single-turn prompt with the question as SENTINEL (cached per media count)."""
        key = (n_images, n_videos)
        if key not in self._rendered:
            parts: list[dict[str, Any]] = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
            messages = self._messages([{"role": "user", "content": [*parts, _text(SENTINEL)]}])
            rendered = render(loaded, self, messages, generation_prompt=True)
            if rendered.count(SENTINEL) != 1:
                raise UsageError(
                    f"the chat template ({self.source}) does not write the question once, verbatim"
                )
            self._rendered[key] = rendered
        return self._rendered[key]

    def check(self, loaded: Any) -> None:
        """Refuse, when the model loads, a Jinja template that fails, loses the question or rewrites it."""
        if self.jinja is None:
            return
        n = 1 if "image" in loaded.adapter.modalities else 0
        parts: list[dict[str, Any]] = [{"type": "image"}] * n
        real = render(
            loaded, self, self._messages([{"role": "user", "content": [*parts, _text(PROBE_QUESTION)]}])
        )
        via_sentinel = self._render_question(loaded, n, 0).replace(SENTINEL, PROBE_QUESTION)
        if real != via_sentinel:
            raise UsageError(
                f"the chat template ({self.source}) rewrites the question text; duet needs it verbatim"
            )
        expand_markers(via_sentinel, loaded.adapter.media_markers, [1] * n, (), self.source)

    def _messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.system is None:
            return messages
        return [{"role": "system", "content": [_text(self.system)]}, *messages]

    # -- training conversations -------------------------------------------------------------------
    def conversation(
        self, loaded: Any, turns: Sequence[tuple[str, str]], tokens_per_image: int, eos: str
    ) -> tuple[str, list[tuple[int, int]]]:
        """A conversation (one image, in turn 1) as one string, and the span of each assistant turn."""
        if self.jinja is None:
            from duet_cli.training.collate import conversation_text

            return conversation_text(loaded.adapter, self.text or "", list(turns), eos, tokens_per_image)
        messages: list[dict[str, Any]] = []
        for k, (question, answer) in enumerate(turns):
            media = [{"type": "image"}] if k == 0 else []
            messages.append({"role": "user", "content": [*media, _text(question)]})
            messages.append({"role": "assistant", "content": [_text(answer)]})

        def rendered(n: int, generation_prompt: bool) -> str:
            return render(loaded, self, self._messages(messages[:n]), generation_prompt=generation_prompt)

        full = rendered(len(messages), False)  # = the last turn's `answered`
        raw: list[tuple[int, int]] = []
        for k in range(len(turns)):
            asked = rendered(2 * k + 1, True)
            answered = full if 2 * k + 2 == len(messages) else rendered(2 * k + 2, False)
            if not (answered.startswith(asked) and full.startswith(answered)):
                raise UsageError(
                    f"the chat template ({self.source}) does not render a conversation turn by turn (a "
                    "turn's prompt is not a prefix of the conversation): duet cannot find its assistant turns"
                )
            lo, hi = len(asked), len(answered)
            while lo < hi and full[lo].isspace():
                lo += 1
            while hi > lo and full[hi - 1].isspace():
                hi -= 1
            raw.append((lo, hi))
        text, where = expand_markers(full, loaded.adapter.media_markers, [tokens_per_image], (), self.source)
        spans = [(where(lo), where(hi)) for lo, hi in raw]
        closing = closing_tokens(loaded.tokenizer)
        for i in reversed(range(len(spans))):  # an unclosed turn gets eos; later spans move right
            lo, hi = spans[i]
            if not any(text[lo:hi].endswith(s) for s in closing):
                text = text[:hi] + eos + text[hi:]
                spans[i] = (lo, hi + len(eos))
                spans[i + 1 :] = [(a + len(eos), b + len(eos)) for a, b in spans[i + 1 :]]
        return text, spans


def _text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


# -- rendering --------------------------------------------------------------------------------------


def render(
    loaded: Any, template: ChatTemplate, messages: list[dict[str, Any]], generation_prompt: bool = True
) -> str:
    """`apply_chat_template(..., tokenize=False)` of the processor (else the tokenizer) with this
    template; a bos the template writes is dropped when the tokenizer adds its own."""
    import jinja2

    owner = loaded.processor if callable(getattr(loaded.processor, "apply_chat_template", None)) else None
    owner = owner or loaded.tokenizer
    try:
        text = owner.apply_chat_template(
            messages, chat_template=template.jinja, tokenize=False, add_generation_prompt=generation_prompt
        )
    except (jinja2.TemplateError, ValueError, TypeError, KeyError, IndexError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"the chat template ({template.source}) cannot be rendered: {reason}") from None
    if not isinstance(text, str):
        raise UsageError(f"the chat template ({template.source}) did not render to text")
    return drop_bos(loaded.tokenizer, text)


def drop_bos(tokenizer: Any, text: str) -> str:
    """`text` without a leading bos when the tokenizer adds one itself (so it is not there twice)."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        return text[len(bos) :]
    return text


@functools.lru_cache(maxsize=8)  # asked at every render: a training conversation renders 2 per turn
def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("x")["input_ids"]
    return (
        bool(ids)
        and ids[0] == tokenizer.bos_token_id
        and ids != tokenizer("x", add_special_tokens=False)["input_ids"]
    )


def closing_tokens(tokenizer: Any) -> list[str]:
    """Special tokens that close an assistant turn (eos, `<|im_end|>`, ...): every special token."""
    found = {tokenizer.eos_token} if tokenizer.eos_token else set()
    found |= set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            found.add(str(added.content))
    return sorted(found)


def expand_markers(
    text: str,
    pairs: Sequence[tuple[str, str]],
    counts: Sequence[int],
    video_counts: Sequence[int],
    source: str,
) -> tuple[str, Callable[[int], int]]:
    """Each media marker in `text` repeated to its image's (`counts`) or video's count, in order, and
    a map from offsets in `text` to offsets in the result."""
    markers = dict(pairs)
    wanted = {"image": list(counts), "video": list(video_counts)}
    modality = {marker: name for name, marker in markers.items()}
    seen = dict.fromkeys(wanted, 0)
    pieces, edits, last = [], [], 0
    for match in re.finditer("|".join(re.escape(m) for m in markers.values()), text):
        name = modality[match.group()]
        i = seen[name]
        seen[name] += 1
        if i >= len(wanted[name]):
            break
        pieces += [text[last : match.start()], match.group() * wanted[name][i]]
        edits.append((match.end(), len(match.group()) * (wanted[name][i] - 1)))
        last = match.end()
    for name, want in wanted.items():
        if seen[name] != len(want):
            what = f"{len(want)} {name}{'s' if len(want) != 1 else ''}"
            hint = "; give --chat-template to use another" if source.startswith("checkpoint") else ""
            wrote = f"wrote {seen[name]} {name} markers for {what}"
            raise UsageError(f"the chat template ({source}) {wrote}{hint}")
    pieces.append(text[last:])

    def where(offset: int) -> int:
        return offset + sum(delta for end, delta in edits if end <= offset)

    return "".join(pieces), where


# -- where the template comes from ------------------------------------------------------------------


def resolve(processor: Any, tokenizer: Any, card: Any, adapter: Any, override: str | None) -> ChatTemplate:
    """The template a model's prompts are written with (see the module docstring for the order)."""
    if override is not None:
        return from_option(override)
    for owner, where in ((processor, "processor"), (tokenizer, "tokenizer")):
        jinja = getattr(owner, "chat_template", None)
        if isinstance(jinja, dict):
            jinja = jinja.get("default")
        if isinstance(jinja, str) and jinja.strip():
            return ChatTemplate(f"checkpoint ({where})", jinja=jinja)
    if card is not None:
        return ChatTemplate(f"catalog card {card.name}", text=card.chat_template)
    return ChatTemplate(f"{adapter.family} default", text=adapter.default_template)


def option_digest(value: str | None) -> str | None:
    """What a run's settings record of --chat-template (compared on resume): its text's digest, or
    None for the model's own template (which the model's identity covers)."""
    return from_option(value).describe()["sha256"] if value is not None else None


def from_option(value: str) -> ChatTemplate:
    """`--chat-template FILE|STRING`: a Jinja template, or duet's form (`<image>` and `{question}`)."""
    looks_like_path = not any(c in value for c in "{}\n") and (
        os.sep in value or Path(value).suffix in (".jinja", ".j2", ".txt", ".tmpl")
    )
    if os.path.exists(value) or looks_like_path:
        body = read_text(value, "--chat-template file", PROFILE_BYTES, error=UsageError)
        source = f"--chat-template {value}"
    else:
        body, source = value, "--chat-template"
    if "{%" in body or "{{" in body:
        return ChatTemplate(source, jinja=body)
    if "{question}" in body:
        return ChatTemplate(source, text=body)
    raise UsageError(
        f"{source}: neither a Jinja chat template ({{{{ }}}} or {{% %}} tags) nor duet's form ({{question}})"
    )
