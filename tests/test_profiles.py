"""Profiles: shipped files validate and resolve, token arithmetic is exact, bad profiles name the field,
and `duet profiles list/show/check` work (no model, no torch)."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from duet_cli.commands import profiles as profiles_cmd
from duet_cli.dims import ModelDims
from duet_cli.errors import ProfileError
from duet_cli.methods import available, get_method
from duet_cli.methods.pyramiddrop.config import PyramidDropConfig
from duet_cli.methods.visionzip.config import VisionZipConfig
from duet_cli.profiles import (
    describe,
    list_profiles,
    load_profile,
    parse_profile,
    resolve_profile,
    shipped_names,
)
from duet_cli.resources import profiles_dir

SHIPPED = [
    "baseline",
    "duet-128",
    "duet-192",
    "duet-64",
    "fastv-128",
    "fastv-192",
    "fastv-64",
    "pdrop-128",
    "pdrop-192",
    "pdrop-64",
    "pool-121",
    "pool-196",
    "pool-64",
    "qwen-duet-640",
    "qwen-duet-640-rel",
    "qwen-pdrop-50",
    "qwen-visionzip-640",
    "qwen-visionzip-640-rel",
    "random-128",
    "random-192",
    "random-64",
    "video-duet-136",
    "video-duet-960",
    "video-pdrop-960",
    "video-visionzip-136",
    "video-visionzip-960",
    "visionzip-128",
    "visionzip-192",
    "visionzip-64",
]


def llava(num_layers: int = 32) -> ModelDims:
    return ModelDims(
        family="llava",
        num_layers=num_layers,
        vision_tokens=577,
        has_cls=True,
        unreduced_tokens=576,
        grid=(24, 24),
    )


def qwen(num_layers: int = 28) -> ModelDims:
    """Qwen2.5-VL dims (dynamic resolution: per-image numbers are the 896 px reference image's)."""
    return ModelDims(
        family="qwen2_5_vl",
        num_layers=num_layers,
        vision_tokens=1024,
        has_cls=False,
        unreduced_tokens=1024,
        grid=(32, 32),
        dynamic_resolution=True,
    )


def dims_of(name: str, depth: int) -> ModelDims:
    """Shipped profiles resolve on their family: qwen-* on Qwen2.5-VL, the rest on LLaVA-1.5."""
    return qwen(depth) if name.startswith("qwen-") else llava(depth)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def from_text(tmp_path: Path, text: str):
    return load_profile(str(write(tmp_path, text)))


# ---- shipped profiles ----


def test_shipped_names() -> None:
    assert shipped_names() == SHIPPED
    assert [p.name for p in list_profiles()] == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("depth", [32, 8])
def test_shipped_profile_validates_and_resolves(name: str, depth: int) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.source == profiles_dir() / f"{name}.yaml"
    assert len(profile.hash) == 12
    resolved = resolve_profile(profile, dims_of(name, depth))
    assert resolved.num_layers == depth
    assert all(1 <= layer < depth for layer in resolved.llm_layers)
    assert len(resolved.ledger(resolved.tokens_per_image(dims_of(name, depth)))) == depth


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_header_says_what_how_and_arithmetic(name: str) -> None:
    text = (profiles_dir() / f"{name}.yaml").read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert text.startswith(f"# {name}: ")
    assert f"duet infer --profile {name} --image examples/shapes.png --question " in header
    full = 28 if name.startswith("qwen-") else 32
    depths = [full, 8] if load_profile(name).llm is not None else [full]
    for depth in depths:
        resolved = resolve_profile(load_profile(name), dims_of(name, depth))
        terms = resolved.arithmetic(resolved.tokens_per_image(dims_of(name, depth))).split(" = ")[0]
        assert terms in header, (terms, depth)


@pytest.mark.parametrize(
    ("name", "n0", "layers32", "counts", "avg"),
    [
        # (16*307 + 8*153 + 8*0)/32 = 191.75
        ("duet-192", 307, [16, 24], [153, 0], 191.75),
        # (16*202 + 8*101 + 8*0)/32 = 126.25
        ("duet-128", 202, [16, 24], [101, 0], 126.25),
        # (16*102 + 8*51 + 8*0)/32 = 63.75
        ("duet-64", 102, [16, 24], [51, 0], 63.75),
    ],
)
def test_duet_arithmetic(name: str, n0: int, layers32: list[int], counts: list[int], avg: float) -> None:
    profile = load_profile(name)
    for depth, layers in [(32, layers32), (8, [4, 6])]:
        resolved = resolve_profile(profile, llava(depth))
        assert resolved.tokens_per_image(llava(depth)) == n0
        assert resolved.llm_layers == layers
        assert resolved.keep_counts(n0) == counts
        assert resolved.avg_visual_tokens(n0) == avg
        assert resolved.queries == "after_image"
        assert resolved.positions == "renumber"


@pytest.mark.parametrize(
    ("name", "keep32", "avg32", "avg8"),
    [
        # FastV, drop after layer 2: floor(576*0.2882)=166, floor(576*0.1702)=98, floor(576*0.0521)=30
        ("fastv-192", 166, (2 * 576 + 30 * 166) / 32, (2 * 576 + 6 * 166) / 8),  # 191.625
        ("fastv-128", 98, (2 * 576 + 30 * 98) / 32, (2 * 576 + 6 * 98) / 8),  # 127.875
        ("fastv-64", 30, (2 * 576 + 30 * 30) / 32, (2 * 576 + 6 * 30) / 8),  # 64.125
    ],
)
def test_fastv_arithmetic(name: str, keep32: int, avg32: float, avg8: float) -> None:
    profile = load_profile(name)
    assert profile.llm is not None and profile.llm.queries == "all" and profile.llm.positions == "keep"
    resolved = resolve_profile(profile, llava(32))
    assert resolved.llm_layers == [2] and resolved.keep_counts(576) == [keep32]
    assert resolved.avg_visual_tokens(576) == avg32
    assert resolve_profile(profile, llava(8)).avg_visual_tokens(576) == avg8
    with pytest.raises(ProfileError, match=r"llm\.layers\[0\]"):
        resolve_profile(profile, llava(2))  # too shallow to drop after layer 2


@pytest.mark.parametrize(("name", "tokens"), [("pool-196", 196), ("pool-121", 121), ("pool-64", 64)])
def test_pool_and_random_token_counts(name: str, tokens: int) -> None:
    for shipped in (name, f"random-{ {196: 192, 121: 128, 64: 64}[tokens] }".replace(" ", "")):
        resolved = resolve_profile(load_profile(shipped), llava(32))
        count = resolved.tokens_per_image(llava(32))
        assert resolved.avg_visual_tokens(count) == count
    assert resolve_profile(load_profile(name), llava(32)).tokens_per_image(llava(32)) == tokens


def test_duet_192_ledger_on_8_layers() -> None:
    resolved = resolve_profile(load_profile("duet-192"), llava(8))
    assert resolved.ledger(307) == [307, 307, 307, 307, 153, 153, 0, 0]
    assert resolved.avg_visual_tokens(307) == 191.75


@pytest.mark.parametrize(
    ("name", "layers32", "avg32", "layers8", "avg8"),
    [
        # (3*576 + 7*288 + 11*144 + 11*72)/32 = 6120/32; (1*576 + 2*288 + 2*144 + 3*72)/8 = 1656/8
        ("pdrop-192", [3, 10, 21], 191.25, [1, 3, 5], 207.0),
        # (4*576 + 8*144 + 9*72 + 11*0)/32 = 4104/32; (1*576 + 2*144 + 2*72 + 3*0)/8 = 1008/8
        ("pdrop-128", [4, 12, 21], 128.25, [1, 3, 5], 126.0),
        # (2*576 + 4*144 + 4*72 + 22*0)/32 = 2016/32; (1*576 + 1*144 + 1*72 + 5*0)/8 = 792/8
        ("pdrop-64", [2, 6, 10], 63.0, [1, 2, 3], 99.0),
    ],
)
def test_pdrop_arithmetic(
    name: str, layers32: list[int], avg32: float, layers8: list[int], avg8: float
) -> None:
    profile = load_profile(name)
    assert profile.vision is None and profile.llm is not None
    assert profile.llm.queries == "last" and profile.llm.positions == "renumber"
    for depth, layers, avg in [(32, layers32, avg32), (8, layers8, avg8)]:
        resolved = resolve_profile(profile, llava(depth))
        assert resolved.tokens_per_image(llava(depth)) == 576
        assert resolved.llm_layers == layers
        assert resolved.avg_visual_tokens(576) == avg


@pytest.mark.parametrize(
    ("name", "tokens"), [("visionzip-192", 192), ("visionzip-128", 128), ("visionzip-64", 64)]
)
def test_visionzip_and_baseline_arithmetic(name: str, tokens: int) -> None:
    resolved = resolve_profile(load_profile(name), llava())
    assert resolved.vision is not None and resolved.vision.contextual_mode == "uniform"  # type: ignore[attr-defined]
    assert resolved.tokens_per_image(llava()) == tokens
    assert resolved.ledger(tokens) == [tokens] * 32
    base = resolve_profile(load_profile("baseline"), llava())
    assert base.tokens_per_image(llava()) == 576 and base.avg_visual_tokens(576) == 576.0


# ---- exact arithmetic and resolution ----


def test_keep_counts_are_exact() -> None:
    profile = parse_profile(
        {"llm": {"method": "pyramiddrop", "layers": [1, 2], "keep_ratios": [0.29, 0.29]}},
        where="t",
        default_name="t",
    )
    assert 100 * 0.29 < 29  # the float product loses a token ...
    assert resolve_profile(profile, llava()).keep_counts(100) == [29, 29]  # ... the exact one does not
    assert resolve_profile(load_profile("duet-192"), llava()).keep_counts(307) == [153, 0]


def test_at_depth_rounds_half_up() -> None:
    profile = parse_profile(
        {"llm": {"method": "pyramiddrop", "at_depth": [0.0625, 0.3125], "keep_ratios": [0.5, 0.25]}},
        where="t",
        default_name="t",
    )
    # 0.0625*8 = 0.5 -> 1 and 0.3125*8 = 2.5 -> 3 (Python's round would give 0 and 2)
    assert resolve_profile(profile, llava(8)).llm_layers == [1, 3]


def test_describe() -> None:
    info = describe(resolve_profile(load_profile("duet-192"), llava()), llava())
    assert info["tokens_per_image"] == info["n0"] == 307
    assert info["keep_counts"] == [153, 0]
    assert info["segments"] == [(1, 16, 307), (17, 24, 153), (25, 32, 0)]
    assert info["avg_visual_tokens"] == 191.75
    assert info["arithmetic"] == "(16*307 + 8*153 + 8*0)/32 = 191.75"
    assert info["reduction"] == pytest.approx(1 - 191.75 / 576)


def test_hash_ignores_name_formatting_and_defaults(tmp_path: Path) -> None:
    a = from_text(tmp_path, "vision: {method: visionzip, dominant: 300, contextual: 7}\n")
    b = load_profile(
        str(
            write(
                tmp_path,
                "# comment\nname: other\ndescription: x\nvision:\n  contextual: 7\n  dominant: 300\n"
                "  method: visionzip\n  contextual_mode: uniform\n",
                "b.yaml",
            )
        )
    )
    c = from_text(tmp_path, "vision: {method: visionzip, dominant: 300, contextual: 8}\n")
    assert a.hash == b.hash != c.hash
    assert a.name == "p" and b.name == "other"
    pooled = from_text(
        tmp_path, "vision: {method: visionzip, dominant: 1, contextual: 1, contextual_mode: pooled}"
    )
    assert pooled.vision is not None and pooled.vision.cluster_width == 4  # type: ignore[attr-defined]


def test_registry() -> None:
    assert available("vision") == ["pool", "random", "visionzip"] and available("llm") == ["pyramiddrop"]
    assert get_method("visionzip", "vision").config_cls is VisionZipConfig
    assert get_method("pyramiddrop", "llm").config_cls is PyramidDropConfig
    with pytest.raises(
        ProfileError, match=r"^vision\.method: unknown method 'visonzip'\. Did you mean: visionzip\?"
    ):
        get_method("visonzip", "vision")


# ---- bad profiles: each names the field ----

LLM = "llm:\n  method: pyramiddrop\n"
VZ = "vision:\n  method: visionzip\n"

BAD = [
    (
        "typo-key",
        VZ + "  dominnt: 300\n  contextual: 7\n",
        "vision.dominnt: unknown field (did you mean 'dominant'?)",
    ),
    ("top-typo", "visoin: {}\n", "visoin: unknown field (did you mean 'vision'?)"),
    (
        "wrong-type",
        VZ + "  dominant: many\n  contextual: 7\n",
        "vision.dominant: expected an integer, got 'many'",
    ),
    (
        "float-count",
        VZ + "  dominant: 3.5\n  contextual: 7\n",
        "vision.dominant: expected an integer, got 3.5",
    ),
    ("negative-dominant", VZ + "  dominant: -3\n  contextual: 7\n", "vision.dominant: must be >= 1 (got -3)"),
    (
        "negative-contextual",
        VZ + "  dominant: 3\n  contextual: -1\n",
        "vision.contextual: must be >= 0 (got -1)",
    ),
    (
        "ratio-1.5",
        LLM + "  layers: [8, 16]\n  keep_ratios: [1.5, 0.5]\n",
        "llm.keep_ratios[0]: must be in [0, 1] (got 1.5)",
    ),
    (
        "ratio-bool",
        LLM + "  layers: [8]\n  keep_ratios: [true]\n",
        "llm.keep_ratios[0]: expected a number, got true",
    ),
    (
        "increasing-ratios",
        LLM + "  layers: [8, 16]\n  keep_ratios: [0.125, 0.25]\n",
        "llm.keep_ratios[1]: must be <= llm.keep_ratios[0] (0.25 > 0.125)",
    ),
    (
        "layers-out-of-order",
        LLM + "  layers: [24, 16]\n  keep_ratios: [0.5, 0.25]\n",
        "llm.layers[1]: must be > llm.layers[0] (16 <= 24)",
    ),
    ("layer-zero", LLM + "  layers: [0]\n  keep_ratios: [0.5]\n", "llm.layers[0]: must be >= 1 (got 0)"),
    ("layers-not-list", LLM + "  layers: 16\n  keep_ratios: [0.5]\n", "llm.layers: expected a list, got 16"),
    (
        "depth-out-of-range",
        LLM + "  at_depth: [0.5, 1.0]\n  keep_ratios: [0.5, 0.25]\n",
        "llm.at_depth[1]: must be strictly between 0 and 1 (got 1.0)",
    ),
    (
        "both-layers-and-at-depth",
        LLM + "  layers: [16]\n  at_depth: [0.5]\n  keep_ratios: [0.5]\n",
        "llm: give exactly one of layers or at_depth, not both",
    ),
    (
        "neither",
        LLM + "  keep_ratios: [0.5]\n",
        "llm: give exactly one of layers or at_depth (neither is set)",
    ),
    (
        "length-mismatch",
        LLM + "  layers: [8, 16]\n  keep_ratios: [0.5]\n",
        "llm.keep_ratios: has 1 entry but llm.layers has 2 drop points",
    ),
    ("missing-ratios", LLM + "  layers: [8]\n", "llm.keep_ratios: required field is missing"),
    (
        "unknown-method",
        "vision:\n  method: visonzip\n  dominant: 3\n",
        "vision.method: unknown method 'visonzip'. Did you mean: visionzip? "
        "Available: pool, random, visionzip",
    ),
    ("method-wrong-stage", "llm:\n  method: visionzip\n", "'visionzip' is a vision-stage method"),
    ("method-missing", "llm:\n  layers: [8]\n", "llm.method: missing (available: pyramiddrop)"),
    ("stage-not-mapping", "vision: 5\n", "vision: expected a mapping with a 'method' key, got 5"),
    (
        "cluster-width-uniform",
        VZ + "  dominant: 3\n  contextual: 1\n  cluster_width: 4\n",
        "vision.cluster_width: only applies to contextual_mode: pooled (this profile uses uniform)",
    ),
    (
        "bad-choice",
        LLM + "  layers: [8]\n  keep_ratios: [0.5]\n  queries: lst\n",
        "llm.queries: must be one of last, after_image, all, salient, got 'lst' (did you mean 'last'?)",
    ),
    ("yaml-syntax", "vision:\n  method: visionzip\n  dominant: [300\n", "YAML syntax error at line 4"),
    ("top-level-list", "- vision\n", "expected a mapping at the top level"),
    ("empty-file", "# only a comment\n", "the profile file is empty"),
    (
        "duplicate-key",
        VZ + "  dominant: 3\n  dominant: 5\n",
        "line 4: duplicate key 'dominant' (first on line 3)",
    ),
    ("alias", "a: &x 1\nvision: *x\n", "line 1: YAML anchors are not allowed (found &x)"),
]


@pytest.mark.parametrize(("text", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_profile_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    text = (
        "nme: x\n"
        + VZ
        + "  dominnt: 300\n  contextual: -2\n"
        + LLM
        + "  layers: [24, 16]\n  keep_ratios: [0.5, 1.5]\n  queries: all\n"
    )
    with pytest.raises(ProfileError) as info:
        from_text(tmp_path, text)
    message = str(info.value)
    assert "5 errors: " in message
    for part in [
        "nme: unknown field (did you mean 'name'?)",
        "vision.dominnt: unknown field (did you mean 'dominant'?)",
        "vision.contextual: must be >= 0 (got -2)",
        "llm.layers[1]: must be > llm.layers[0] (16 <= 24)",
        "llm.keep_ratios[1]: must be in [0, 1] (got 1.5)",
    ]:
        assert part in message.split(": 5 errors: ")[1].split("; "), part


def test_misspelt_key_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        from_text(tmp_path, VZ + "  dominnt: 300\n  contextual: 7\n")
    assert str(info.value).endswith(": vision.dominnt: unknown field (did you mean 'dominant'?)")


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile(str(tmp_path / "nope.yaml"))
    with pytest.raises(
        ProfileError, match=r"^unknown profile 'duet-19'\. Did you mean: duet-192\? Available: "
    ):
        load_profile("duet-19")


# ---- model-dependent refusals ----


def _llm(tmp_path: Path, schedule: str):
    return from_text(tmp_path, LLM + schedule)


def test_refused_when_at_depth_rounds_to_layer_zero(tmp_path: Path) -> None:
    profile = _llm(tmp_path, "  at_depth: [0.05, 0.5]\n  keep_ratios: [0.5, 0.25]\n")
    assert resolve_profile(profile, llava(32)).llm_layers == [2, 16]
    with pytest.raises(ProfileError) as info:
        resolve_profile(profile, llava(8))
    assert str(info.value) == (
        f"{profile.source}: llm.at_depth[0]: 0.05 x 8 layers rounds to layer 0; "
        "this profile cannot be realised on a model with 8 decoder layers"
    )


def test_refused_when_at_depth_points_collide(tmp_path: Path) -> None:
    profile = _llm(tmp_path, "  at_depth: [0.5, 0.55]\n  keep_ratios: [0.5, 0.25]\n")
    with pytest.raises(
        ProfileError, match=r"llm\.at_depth\[1\]: 0\.55 x 8 layers rounds to layer 4, the same as"
    ):
        resolve_profile(profile, llava(8))


def test_refused_when_layer_beyond_depth(tmp_path: Path) -> None:
    profile = _llm(tmp_path, "  layers: [16, 40]\n  keep_ratios: [0.5, 0.25]\n")
    with pytest.raises(
        ProfileError, match=r"llm\.layers\[1\]: drop after layer 40 but the model has 32 decoder"
    ):
        resolve_profile(profile, llava(32))


def test_refused_when_vision_budget_exceeds_tokens(tmp_path: Path) -> None:
    profile = from_text(
        tmp_path, VZ + "  dominant: 580\n  contextual: 20\n" + LLM + "  layers: [40]\n  keep_ratios: [0.5]\n"
    )
    with pytest.raises(ProfileError) as info:
        resolve_profile(profile, llava(32))
    message = str(info.value)
    assert "2 errors" in message
    assert (
        "vision: dominant + contextual = 600 exceeds the 577 tokens the vision encoder emits (CLS included)"
        in message
    )
    assert "llm.layers[0]: drop after layer 40 but the model has 32 decoder layers" in message


# ---- the `duet profiles` command ----

runner = CliRunner()


def test_profiles_table_renders() -> None:
    rows = [profiles_cmd.profile_row(p, profiles_cmd.LLAVA_7B) for p in list_profiles()]
    console = Console(file=io.StringIO(), width=200)
    console.print(profiles_cmd.profiles_table(rows, "llava-1.5-7b"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "visionzip 300+7 pooled w=4" in text
    assert "pyramiddrop @[0.5,0.75] keep [0.5,0.0] after_image renumber" in text
    assert "191.75" in text and "126.25" in text and "63.75" in text


def test_cli_list() -> None:
    result = runner.invoke(profiles_cmd.app, ["list"])
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        assert name in result.output
    result = runner.invoke(profiles_cmd.app, ["list", "--json"])
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == SHIPPED
    assert {r["name"]: r["avg_visual_tokens"] for r in rows}["duet-192"] == 191.75


def test_cli_show() -> None:
    result = runner.invoke(profiles_cmd.app, ["show", "duet-192"])
    assert result.exit_code == 0, result.output
    assert "(16*307 + 8*153 + 8*0)/32 = 191.75" in result.output
    result = runner.invoke(profiles_cmd.app, ["show", "pdrop-64", "--json"])
    info = json.loads(result.output)
    assert info["llm_layers"] == [2, 6, 10] and info["avg_visual_tokens"] == 63.0
    result = runner.invoke(profiles_cmd.app, ["show", "duet-19"])
    assert isinstance(result.exception, ProfileError)
    assert "Did you mean: duet-192?" in str(result.exception)


def test_cli_show_with_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("duet_cli.catalog")
    fake.dims_for = lambda spec: llava(8)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "duet_cli.catalog", fake)
    result = runner.invoke(profiles_cmd.app, ["show", "duet-192", "--model", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["model"] == "tiny" and info["llm_layers"] == [4, 6] and info["avg_visual_tokens"] == 191.75
    result = runner.invoke(profiles_cmd.app, ["check", "duet-192", "--model", "tiny"])
    assert result.exit_code == 0 and "(4*307 + 2*153 + 2*0)/8 = 191.75" in result.output


def test_cli_check(tmp_path: Path) -> None:
    good = write(tmp_path, LLM + "  layers: [8, 16]\n  keep_ratios: [0.5, 0.25]\n", "good.yaml")
    result = runner.invoke(profiles_cmd.app, ["check", str(good)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok: {good} (good, hash ")
    result = runner.invoke(profiles_cmd.app, ["check", str(good), "--json"])
    assert json.loads(result.output)["ok"] is True
    bad = write(tmp_path, LLM + "  layers: [16, 8]\n  keep_ratios: [0.5, 0.75]\n", "bad.yaml")
    result = runner.invoke(profiles_cmd.app, ["check", str(bad)])
    assert isinstance(result.exception, ProfileError)
    assert "llm.layers[1]" in str(result.exception) and "llm.keep_ratios[1]" in str(result.exception)


def test_cli_help() -> None:
    for args in (["--help"], ["list", "--help"], ["show", "--help"], ["check", "--help"]):
        result = runner.invoke(profiles_cmd.app, args)
        assert result.exit_code == 0, (args, result.output)


# ---- budget-relative stage-1 counts ----


def relative(dominant: float, contextual: float, **extra: object):  # type: ignore[no-untyped-def]
    vision = {"method": "visionzip", "dominant_fraction": dominant, "contextual_fraction": contextual}
    return parse_profile({"name": "rel", "vision": {**vision, **extra}}, where="test", default_name="rel")


def test_relative_counts_are_floors_of_each_images_share() -> None:
    cfg = load_profile("qwen-duet-640-rel").vision
    assert isinstance(cfg, VisionZipConfig) and cfg.relative
    # hand-worked: 1024*0.52734375 = 540, 1024*0.09765625 = 100; 256 -> 135 + 25; 64 -> 33.75, 6.25
    assert cfg.counts_for(1024) == (540, 100)
    assert cfg.counts_for(256) == (135, 25)
    assert cfg.counts_for(64) == (33, 6)
    assert cfg.counts_for(1) == (1, 0)  # at least one dominant token
    assert cfg.summary() == "visionzip 52.7%+9.8% pooled w=4"


def test_relative_profile_on_qwen_matches_the_absolute_one_at_the_reference_image() -> None:
    rel = resolve_profile(load_profile("qwen-duet-640-rel"), qwen(28))
    ab = resolve_profile(load_profile("qwen-duet-640"), qwen(28))
    assert rel.tokens_per_image(qwen(28)) == ab.tokens_per_image(qwen(28)) == 640
    assert describe(rel, qwen(28))["avg_visual_tokens"] == 440


def test_relative_counts_become_absolute_on_a_fixed_geometry_model() -> None:
    resolved = resolve_profile(relative(0.5, 0.125), llava(32))
    cfg = resolved.vision
    assert isinstance(cfg, VisionZipConfig) and not cfg.relative
    # of the 577 tokens CLIP-L/336 emits (CLS included): floor(288.5) = 288, floor(72.125) = 72
    assert (cfg.dominant, cfg.contextual) == (288, 72)
    assert resolved.tokens_per_image(llava(32)) == 360


@pytest.mark.parametrize(
    ("vision", "message"),
    [
        ({"dominant": 10, "contextual_fraction": 0.1}, "not a mix"),
        ({"dominant_fraction": 0.8, "contextual_fraction": 0.3}, "exceeds 1"),
        ({"dominant_fraction": 0.0, "contextual_fraction": 0.3}, r"dominant_fraction: must be > 0"),
        ({"dominant_fraction": 1.5, "contextual_fraction": 0.0}, r"must be in \[0, 1\]"),
    ],
)
def test_bad_relative_counts_are_one_clear_error(vision: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile({"name": "x", "vision": {"method": "visionzip", **vision}}, where="t", default_name="x")
