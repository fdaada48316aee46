"""Sequences and labels for training, left-padded batches, and the seeded data order.

A conversation is written with the model's chat template (duet_cli.inputs.chat_template): a Jinja template
(the checkpoint's own, or --chat-template) renders the turns itself, and its assistant turns are
labelled. With duet's own template form it becomes (the LLaVA-1.5 "v1" format, with the model's eos):

    <bos>USER: <image>x N\\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>...

(ChatML on Qwen2.5-VL: `...<|im_start|>assistant\\nA1<|im_end|>\\n<|im_start|>user\\nQ2...`; the
family adapter says what goes between a prompt and its answer and after each turn.)
N = the image's placeholder count: the profile's stage-1 count, or on Qwen2.5-VL that image's own. The
text is tokenized in one piece and a token is labelled iff its character span overlaps an answer
(`A_k</s>`); every other token (bos, template, questions, image placeholders, padding) is IGNORE.
Turn 1's prompt is exactly what `duet infer` sends for that question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from duet_cli.engine.training import IGNORE
from duet_cli.errors import InputError
from duet_cli.training.data import Conversation


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def label_tokens(self) -> int:
        return sum(t != IGNORE for t in self.labels)


def conversation_text(
    adapter: Any, template: str, turns: list[tuple[str, str]], eos: str, tokens_per_image: int
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as one string, and the character span of each answer (eos included)."""
    text, spans = "", []
    for k, (question, answer) in enumerate(turns):
        turn = template if k == 0 else adapter.turn_template(template)
        prompt, _ = adapter.build_prompt(turn, question, 1 if k == 0 else 0, tokens_per_image)
        text += prompt + adapter.answer_prefix
        start = len(text)
        text += answer + eos
        spans.append((start, len(text)))
        text += adapter.turn_suffix
    return text, spans


def encode(loaded: Any, conv: Conversation, tokens_per_image: int, image_id: int) -> Encoded:
    """Token ids and labels of one conversation, written with the model's chat template
    (`loaded.chat.conversation`: a Jinja template's own turns, or the format above)."""
    tokenizer = loaded.tokenizer
    eos = tokenizer.eos_token
    if not eos:
        raise InputError("the tokenizer has no eos token; training needs one to end each answer")
    text, spans = loaded.chat.conversation(loaded, conv.turns, tokens_per_image, eos)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = []
    for tok, (s, e) in zip(ids, enc["offset_mapping"]):
        inside = e > s and any(s < hi and e > lo for lo, hi in spans)
        labels.append(tok if inside else IGNORE)
    placeholders = sum(t == image_id for t in ids)
    if placeholders != tokens_per_image:
        raise InputError(
            f"sample {conv.id}: {placeholders} image placeholders after tokenization, "
            f"expected {tokens_per_image} (does a question contain the image token?)"
        )
    if labels[0] != IGNORE or not any(t != IGNORE for t in labels):
        raise InputError(f"sample {conv.id}: the answers produced no label tokens")
    return Encoded(ids, labels)


def collate(encoded: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded input_ids / attention_mask / labels (IGNORE on padding)."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, width - n :] = torch.tensor(e.input_ids)
        mask[i, width - n :] = 1
        labels[i, width - n :] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --- data order ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """Which samples each optimizer step, rank and micro-step sees: a seeded permutation per epoch.

    Step s of epoch e takes the global batch `perm_e[j*G:(j+1)*G]` (j = s mod steps_per_epoch,
    G = batch_size x world x grad_accum); micro-step m of rank r takes chunk `m*world + r` of it.
    The set of samples per optimizer step depends only on (seed, G), never on how it is split.
    """

    n: int
    seed: int
    batch_size: int
    world: int
    grad_accum: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def step_samples(self, step: int) -> list[int]:
        """The global batch of optimizer step `step` (0-based)."""
        epoch, j = divmod(step, self.steps_per_epoch)
        g = self.global_batch
        return self.permutation(epoch)[j * g : (j + 1) * g]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        batch = self.step_samples(step)
        b = self.batch_size
        chunks = [batch[c * b : (c + 1) * b] for c in range(self.world * self.grad_accum)]
        return [chunks[m * self.world + rank] for m in range(self.grad_accum)]
