"""The vLLM plugin (duet_cli/integrations/vllm_plugin.py): profile plan and refusals (any venv), and, in a
venv with vLLM (make check-vllm), an OpenAI chat request with an image against the plugin's server:
64 image tokens, and the same kept indices and greedy answer as `duet infer` with the same profile.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from duet_cli.errors import ProfileError
from duet_cli.integrations.vllm_plugin import PROFILE_ENV, plan_for, rename_checkpoint_key

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "models" / "tiny-llava"
QUESTION = "What colors are in the image?"
MAX_TOKENS = 8


def tiny_config(**extra: object) -> SimpleNamespace:
    """The bundled tiny LLaVA's config.json as attributes (what plan_for reads of a LlavaConfig)."""

    def ns(d: dict) -> SimpleNamespace:
        return SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else v for k, v in d.items()})

    return ns(json.loads((TINY / "config.json").read_text()) | extra)


def test_plan_from_config_field_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    plan = plan_for(tiny_config(duet_profile="visionzip-64"))
    assert (plan.dominant, plan.contextual, plan.tokens, plan.unreduced) == (54, 10, 64, 576)
    monkeypatch.setenv(PROFILE_ENV, "visionzip-192")
    assert plan_for(tiny_config()).tokens == 192
    assert plan_for(tiny_config(duet_profile="visionzip-128")).tokens == 128  # the field wins
    assert not plan_for(tiny_config(duet_profile="baseline")).reduce


def test_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    with pytest.raises(
        ProfileError, match="one token batch and one attention metadata for all decoder layers"
    ):
        plan_for(tiny_config(duet_profile="duet-64"))
    with pytest.raises(ProfileError, match=f"no profile; set {PROFILE_ENV}"):
        plan_for(tiny_config())
    with pytest.raises(ProfileError, match="runs visionzip only"):
        plan_for(tiny_config(duet_profile="pool-64"))
    with pytest.raises(ProfileError, match="unknown profile"):
        plan_for(tiny_config(duet_profile="visonzip-64"))


def test_checkpoint_key_names() -> None:
    assert rename_checkpoint_key("vision_tower.embeddings.class_embedding") == (
        "vision_tower.vision_model.embeddings.class_embedding"
    )
    assert rename_checkpoint_key("model.vision_tower.vision_model.pre_layrnorm.weight") == (
        "vision_tower.vision_model.pre_layrnorm.weight"
    )
    assert rename_checkpoint_key("model.language_model.norm.weight") == "language_model.model.norm.weight"
    assert rename_checkpoint_key("lm_head.weight") == "language_model.lm_head.weight"
    assert rename_checkpoint_key("language_model.model.norm.weight") == "language_model.model.norm.weight"


# ---- the server, in the vLLM venv ----


def _reference_bin() -> Path:
    return Path(os.environ.get("DUET_REFERENCE_BIN", ROOT / ".venv" / "bin" / "duet"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image(path: Path) -> Path:
    """A 336 x 336 image: the tower's own size, so no resize (PIL in vLLM's venv, torchvision in duet's)."""
    from PIL import Image

    data = bytes((i * 37 + (i // 1008) * 11) % 256 for i in range(336 * 336 * 3))
    Image.frombytes("RGB", (336, 336), data).save(path)
    return path


def _reference(image: Path) -> dict:
    """`duet infer` in duet's own venv (transformers in duet's range) with the same profile and prompt."""
    cmd = [
        str(_reference_bin()),
        "infer",
        "-m",
        str(TINY),
        "-p",
        "visionzip-64",
        "-i",
        str(image),
        "-q",
        QUESTION,
    ]
    cmd += ["--max-new-tokens", str(MAX_TOKENS), "--dtype", "float32", "--device", "cpu", "--json"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True).stdout
    data = json.loads(out)
    selection = data["trace"]["samples"][0]["images"][0]
    return {
        "answer": data["results"][0]["answer"],
        "dominant": selection["dominant"],
        "targets": [group["target"] for group in selection["contextual"]],
    }


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the vLLM server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the vLLM server did not come up in {limit_s:.0f} s:\n{log.read_text()[-3000:]}")


def test_server_answers_with_64_image_tokens_like_duet_infer(tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed here (make check-vllm builds .venv-vllm)")
    if not _reference_bin().exists():
        pytest.skip(f"no duet reference at {_reference_bin()} (make setup, or set DUET_REFERENCE_BIN)")
    image = _image(tmp_path / "image.png")
    reference = _reference(image)

    port, log, trace = _free_port(), tmp_path / "server.log", tmp_path / "trace.jsonl"
    env = os.environ | {
        # the server-start knob: with it the plugin takes over LlavaForConditionalGeneration
        PROFILE_ENV: "visionzip-64",
        "DUET_VLLM_TRACE": str(trace),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(TINY),
        "--port",
        str(port),
    ]
    cmd += ["--host", "127.0.0.1", "--dtype", "float32", "--enforce-eager", "--max-model-len", "1024"]
    cmd += ["--max-num-seqs", "4", "--served-model-name", "tiny", "--kv-cache-memory-bytes", str(1 << 29)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/health", log)
        url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            # duet tokenizes the rendered chat template with the tokenizer's special tokens (BOS);
            # vLLM's chat endpoint does not unless asked, and the prompts would differ by BOS
            "add_special_tokens": True,
        }
        reply = _post(f"http://127.0.0.1:{port}/v1/chat/completions", body)
        # the prompt the chat template renders, with its one unexpanded <image> token
        unexpanded = _post(
            f"http://127.0.0.1:{port}/tokenize",
            {"model": "tiny", "prompt": f"USER: <image>\n{QUESTION} ASSISTANT:"},
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    server_log = log.read_text()
    assert "visionzip-64 (visionzip 54+10 uniform): 64 image tokens per image instead of 576" in server_log
    assert reply["usage"]["prompt_tokens"] == unexpanded["count"] - 1 + 64  # <image> became 64 placeholders
    kept = [json.loads(line) for line in trace.read_text().splitlines()]
    assert kept and kept[-1]["dominant"] == reference["dominant"]
    assert kept[-1]["targets"] == reference["targets"]
    assert reply["choices"][0]["message"]["content"] == reference["answer"]


def test_server_refuses_an_llm_stage_profile_in_one_line() -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed here (make check-vllm builds .venv-vllm)")
    env = os.environ | {PROFILE_ENV: "duet-64", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TINY)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1
    refusal = [line for line in out.stderr.splitlines() if line.startswith("duet: ")]
    assert len(refusal) == 1, out.stderr[-2000:]
    assert "one token batch and one attention metadata for all decoder layers" in refusal[0]
    assert "Traceback" not in out.stderr
