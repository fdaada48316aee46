"""VisionZip's stage-1 apply function: selection and merging on a batch, with its trace records."""

from __future__ import annotations

import torch

from duet_cli.engine.stage1_inputs import Stage1Inputs
from duet_cli.methods.registry import get_method
from duet_cli.methods.visionzip.config import VisionZipConfig
from duet_cli.methods.visionzip.select import Stage1Selection, select_and_merge
from duet_cli.trace import ContextualGroup, ImageSelection


def image_selections(
    sel: Stage1Selection, n_tokens: int, grid: tuple[int, int], has_cls: bool
) -> list[ImageSelection]:
    """Per-image trace records from a batched selection (members listed in position order)."""
    out = []
    assign = sel.assign.tolist()
    for b, (dominant, targets) in enumerate(zip(sel.dominant.tolist(), sel.targets.tolist())):
        members: list[list[int]] = [[] for _ in targets]
        for token, slot in enumerate(assign[b]):
            if slot >= 0 and token != targets[slot]:
                members[slot].append(token)
        groups = [ContextualGroup(target=t, members=m) for t, m in zip(targets, members)]
        out.append(ImageSelection(n_tokens, grid, has_cls, dominant, groups))
    return out


def apply(inputs: Stage1Inputs, cfg: VisionZipConfig) -> tuple[torch.Tensor, list[ImageSelection]]:
    assert inputs.scores is not None and inputs.keys is not None
    dominant, contextual = cfg.counts_for(inputs.hidden.shape[1])
    tokens, selection = select_and_merge(
        inputs.hidden,
        inputs.scores,
        inputs.keys,
        dominant=dominant,
        contextual=contextual,
        mode=cfg.contextual_mode,
        cluster_width=cfg.cluster_width or 1,  # unused by the uniform mode
        has_cls=inputs.has_cls,
    )
    return tokens, image_selections(selection, inputs.hidden.shape[1], inputs.grid, inputs.has_cls)


get_method("visionzip", "vision").apply = apply
