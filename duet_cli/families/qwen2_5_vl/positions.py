"""3-D M-RoPE positions for Qwen2.5-VL prompts whose images and videos carry fewer placeholders than their
grids (stage 1 kept some merge units of each image and of each temporal slice of each video).

Each visual item's positions are the stock ones of its full grid (`get_vision_position_ids`, with the
video's time spacing), gathered at the merge units its output tokens came from; text positions continue
after each item exactly as in the stock `get_rope_index`, so rope deltas (and decoding) are unchanged.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from duet_cli.errors import HookError

IMAGE, VIDEO = 1, 2  # mm_token_type_ids values
KIND = {IMAGE: "image", VIDEO: "video"}


@dataclass
class Item:
    """One image or video of a prompt: its patch grid (t, h, w), the merge units (raster index over the
    whole grid) of its output tokens in order, or None before the tower ran, and for a video the seconds
    one temporal slice spans."""

    grid: tuple[int, int, int]
    kept: list[int] | None
    seconds: float = 1.0


def per_row(counts: list[int], selected: list[Item], given: list[Item], kind: str) -> list[list[Item]]:
    """The items of each row, rows holding `counts` items of one kind.

    After the tower ran: its selections, in order; generate() repeats each prompt's rows for beams after
    the tower ran once per prompt, so the rows of prompt p are p * r ... p * r + r - 1. Before (generate()
    asks for positions first): `given`, the grids of the inputs with no selection yet."""
    total = sum(counts)
    if selected and total % len(selected) == 0:
        repeat = total // len(selected)
        out = []
        for row, c in enumerate(counts):
            first = sum(counts[p * repeat] for p in range(row // repeat))
            out.append(list(selected[first : first + c]))
        return out
    if len(given) != total:
        raise HookError(
            f"stage 1 on Qwen2.5-VL: {total} {kind}s in the prompts but {len(given)} {kind} grids"
        )
    return [given[sum(counts[:row]) : sum(counts[: row + 1])] for row in range(len(counts))]


def rope_index(
    owner: Any,
    merge: int,
    tokens_per_second: float,
    input_ids: torch.Tensor,
    types: torch.Tensor,
    attention_mask: torch.Tensor | None,
    items: dict[int, list[list[Item]]],
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(3, B, L) positions, (B, 1) rope deltas, and whether some visual positions are provisional.

    `items[kind][row]` are the row's images (kind 1) or videos (kind 2) in prompt order (`per_row`)."""
    device = input_ids.device
    b, length = input_ids.shape
    positions = torch.zeros(3, b, length, dtype=input_ids.dtype, device=device)
    rows = []
    for row in range(b):
        valid = (
            attention_mask[row].bool()
            if attention_mask is not None
            else torch.ones(length, dtype=torch.bool, device=device)
        )
        groups = [(key, len(list(run))) for key, run in itertools.groupby(types[row][valid].tolist())]
        rows.append((valid, groups))
    provisional, deltas = False, list[int]()
    for row, (valid, groups) in enumerate(rows):
        cur, parts = 0, []
        pending = {key: iter(items[key][row]) for key in (IMAGE, VIDEO)}
        for key, n in groups:
            if key == 0:
                parts.append(torch.arange(n, device=device).view(1, -1).expand(3, -1) + cur)
                cur += n
                continue
            item = next(pending[key])
            t, h, w = item.grid
            interval = tokens_per_second * item.seconds if key == VIDEO else 1
            grid = torch.tensor([t, h, w])
            full = owner.get_vision_position_ids(cur, grid, 1, merge, interval, device=device)
            kept = item.kept
            if kept is None:  # the tower has not run yet (generate() asks first): corrected later
                kept, provisional = list(range(min(n, full.shape[1]))), True
            if len(kept) != n:
                raise HookError(
                    f"an {KIND[key]} has {n} placeholders but stage 1 emits {len(kept)} tokens for it "
                    f"(grid {(t, h, w)}); build prompts with the reduced counts"
                )
            parts.append(full[:, torch.tensor(kept, dtype=torch.long, device=device)])
            cur += max(h, w) // merge
        llm = torch.cat(parts, dim=1)
        positions[:, row, valid] = llm.to(positions.dtype)
        deltas.append(int(llm.max()) + 1 - int(valid.sum()))
    return positions, torch.tensor(deltas, device=device).unsqueeze(1), provisional


def counts_per_row(types: torch.Tensor, attention_mask: torch.Tensor | None, key: int) -> list[int]:
    """Runs of `key` tokens (one per image or video) in each row."""
    out = []
    for row in range(types.shape[0]):
        seq = types[row] if attention_mask is None else types[row][attention_mask[row].bool()]
        out.append(sum(1 for k, _ in itertools.groupby(seq.tolist()) if k == key))
    return out
