"""Integrations with other tools' plugin mechanisms; each is imported only by the tool that loads it.

`lmms_eval_models` is the `lmms_eval.models` entry point (pyproject.toml): lmms-eval's model registry
calls it when lmms-eval starts, so it stays light and names the model class by path; the class itself
(duet_cli/integrations/lmms_eval.py, which imports torch and lmms-eval) loads only for `--model duet`.
"""

from __future__ import annotations

from typing import Any

MODEL_CLASS = "duet_cli.integrations.lmms_eval.DuetLMMs"


def lmms_eval_models() -> Any:
    """The manifest that registers `--model duet` with lmms-eval (>= 0.7, registry v2)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="duet", simple_class_path=MODEL_CLASS)
