"""mergekit YAML configs as recipes: parsing, validation (every error message), the round trip
through to_yaml, mergekit's own parser accepting what we write, and a parsed config merging
bit for bit as mergekit merges it."""

from __future__ import annotations

import pytest
import torch

from git_theta_like.merge import MergeConfigError
from git_theta_like.merge.compute import merge_many_tensors
from git_theta_like.merge.mergekit import (
    METHODS,
    Conditional,
    Gradient,
    ModelSpec,
    Recipe,
    evaluate,
    load_recipe,
    to_yaml,
)

TIES = """
models:
  - model: org/base            # mergekit configs often list the base among the models
  - model: org/math
    parameters:
      density: [0.2, 0.5]      # a gradient over the layers
      weight: 0.7
  - model: org/code
    parameters:
      weight: 0.3
      density:
        - filter: self_attn
          value: 0.4
        - value: 0.6
merge_method: ties
base_model: org/base
parameters:
  normalize: true
  int8_mask: true             # memory only: accepted, not kept
dtype: float32
out_dtype: bfloat16
"""


def test_a_ties_config_parses_into_a_recipe() -> None:
    r = load_recipe(TIES, "merge.yaml")
    assert r.method == "ties" and r.mergekit_method == "ties" and r.base_model == "org/base"
    assert r.models == (
        ModelSpec("org/math", {"density": Gradient((0.2, 0.5)), "weight": 0.7}),
        ModelSpec(
            "org/code", {"weight": 0.3, "density": (Conditional("self_attn", 0.4), Conditional(None, 0.6))}
        ),
    )
    assert r.params == {"normalize": True}
    assert r.implied["conventions"] == "mergekit" and r.implied["density"] == 1.0  # mergekit's default
    assert (r.dtype, r.out_dtype, r.precision) == ("float32", "bfloat16", "float32")
    # 16-bit dtypes: the precision the method computes in, as mergekit's (linear: float32)
    for method, dtype, precision in (
        ("ties", "bfloat16", "bfloat16"),
        ("task_arithmetic", "float16", "float16"),
        ("linear", "bfloat16", "float32"),
        ("linear", "float64", "float64"),
    ):
        base = "base_model: o\n" if method != "linear" else ""
        got = load_recipe(f"merge_method: {method}\n{base}models: [a, b]\ndtype: {dtype}\n", "m.yaml")
        assert (got.dtype, got.precision) == (dtype, precision)
    s = r.strategy("model.layers.3.self_attn.q_proj.weight", 0.5)
    assert s.describe() == "ties density=1.0 lambda=1.0 conventions=mergekit"
    assert r.per_model("model.layers.3.self_attn.q_proj.weight", 0.5) == [
        {"density": 0.35, "weight": 0.7},
        {"weight": 0.3, "density": 0.4},
    ]
    assert r.per_model("model.layers.0.mlp.up_proj.weight", 0.0)[1]["density"] == 0.6


def test_evaluate_interpolates_gradients_as_mergekit_does() -> None:
    g = Gradient((0.0, 1.0, 0.5))
    assert [evaluate(g, "", t) for t in (0.0, 0.25, 0.5, 1.0)] == [0.0, 0.5, 1.0, 0.5]
    conds = (Conditional("mlp", 2.0), Conditional("*", g))
    assert evaluate(conds, "x.mlp.w", 0.5) == 2.0 and evaluate(conds, "x.attn", 0.5) == 1.0
    assert evaluate((Conditional("mlp", 1.0),), "x.attn", 0.0) is None


CONFIGS = [
    TIES,
    "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 2.0}\n  - model: b\n"
    "    parameters: {weight: 1.0}\nparameters: {normalize: false}\n",
    "merge_method: dare_ties\nbase_model: b\nmodels:\n"
    "  - {model: x, parameters: {density: 0.5, weight: 0.5}}\n"
    "  - {model: y, parameters: {density: 0.6, weight: 0.5}}\nparameters: {lambda: 0.9}\ndtype: float64\n",
    "merge_method: della\nbase_model: b\nmodels: [{model: x}, {model: y}]\n"
    "parameters: {density: 0.5, epsilon: 0.1}\n",
    "merge_method: nuslerp\nmodels:\n  - {model: x, parameters: {weight: 0.3}}\n"
    "  - {model: y, parameters: {weight: 0.7}}\nparameters: {nuslerp_flatten: false}\n",
    "merge_method: slerp\nbase_model: x\nmodels: [{model: y}]\nparameters:\n  t:\n"
    "    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - value: 0.5\n",
    "merge_method: model_stock\nbase_model: b\nmodels: [x, y, {model: z}]\n",
    "merge_method: sce\nbase_model: b\nmodels: [x, y]\nparameters: {select_topk: 0.1}\n",
    "merge_method: karcher\nmodels: [x, y]\nparameters: {max_iter: 20, tol: 1.0e-7}\n",
    "merge_method: multislerp\nbase_model: b\nmodels:\n"
    "  - {model: x, parameters: {weight: 0.5}}\n  - {model: y, parameters: {weight: 0.3}}\n"
    "  - {model: z, parameters: {weight: 0.2}}\n",
    "merge_method: multislerp\nmodels: [x, y]\nparameters: {normalize_weights: false, eps: 1.0e-6}\n",
    "merge_method: breadcrumbs_ties\nbase_model: b\nmodels:\n"
    "  - {model: x, parameters: {weight: 1, gamma: 0.02}}\n"
    "  - {model: y, parameters: {weight: 1}}\nparameters: {density: 0.8}\n",
]


@pytest.mark.parametrize("text", CONFIGS)
def test_round_trip(text: str) -> None:
    r = load_recipe(text, "c.yaml")
    out = to_yaml(r)
    assert load_recipe(out, "c.yaml") == r
    assert to_yaml(load_recipe(out, "c.yaml")) == out


@pytest.mark.slow  # mergekit.config imports transformers and peft: ~15 s of CPU
def test_mergekit_reads_what_we_write() -> None:
    config = pytest.importorskip("mergekit.config", reason="mergekit is not installed (pip install mergekit)")
    import yaml

    for text in CONFIGS:
        r = load_recipe(text, "c.yaml")
        parsed = config.MergeConfiguration.model_validate(yaml.safe_load(to_yaml(r)))
        assert parsed.merge_method == r.mergekit_method and len(parsed.models or []) == len(r.models)
        assert str(parsed.base_model) == r.base_model if r.base_model else parsed.base_model is None


def test_every_mergekit_method_we_map_exists_in_mergekit() -> None:
    registry = pytest.importorskip("mergekit.merge_methods.registry", reason="mergekit is not installed")
    names = {m.spec.name for m in registry.registered_methods()}
    assert set(METHODS) <= names


def test_a_parsed_config_merges_bit_for_bit_as_mergekit() -> None:
    api = pytest.importorskip("mergekit.merge_methods.api", reason="mergekit is not installed")
    text = (
        "merge_method: ties\nbase_model: b\nmodels:\n"
        "  - {model: x, parameters: {weight: 0.6, density: 0.3}}\n"
        "  - {model: y, parameters: {weight: 0.4}}\n"  # density: mergekit's default, 1.0
        "  - {model: z, parameters: {weight: 0.5, density: 0.55}}\n"
        "parameters: {lambda: 1.1}\ndtype: float32\n"
    )
    r = load_recipe(text, "c.yaml")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 32, generator=g) * 0.05
    tunes = [base + torch.round(torch.randn(40, 32, generator=g) * 300) / 30000 for _ in range(3)]
    want = api.merge_tensors(
        [base, *tunes],
        "ties",
        parameters={"weight": [0.6, 0.4, 0.5], "density": [0.3, 1.0, 0.55], "lambda": 1.1},
        base_index=0,
    )
    got = merge_many_tensors(base, tunes, r.strategy("w"), per_model=r.per_model("w"), precision=r.precision)
    assert torch.equal(got, want)


@pytest.mark.parametrize("with_base", [True, False])
def test_a_parsed_multislerp_config_merges_bit_for_bit_as_mergekit(with_base: bool) -> None:
    """multislerp around base_model (the task vectors) or, without one, of the models themselves."""
    api = pytest.importorskip("mergekit.merge_methods.api", reason="mergekit is not installed")
    text = (
        "merge_method: multislerp\n"
        + ("base_model: b\n" if with_base else "")
        + (
            "models:\n  - {model: x, parameters: {weight: 0.5}}\n  - {model: y, parameters: {weight: 0.3}}\n"
            "  - {model: z, parameters: {weight: 0.2}}\n"
        )
    )
    r = load_recipe(text, "c.yaml")
    assert r.strategy("w")["use_base"] is with_base
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 32, generator=g) * 0.05
    tunes = [base + torch.randn(40, 32, generator=g) * 0.01 for _ in range(3)]
    inputs = [base, *tunes] if with_base else tunes
    want = api.merge_tensors(
        inputs, "multislerp", parameters={"weight": [0.5, 0.3, 0.2]}, base_index=0 if with_base else None
    )
    got = merge_many_tensors(base, tunes, r.strategy("w"), per_model=r.per_model("w"), precision=r.precision)
    assert torch.equal(got, want)


def recipe_error(text: str) -> str:
    with pytest.raises(MergeConfigError) as e:
        load_recipe(text, "m.yaml")
    return str(e.value)


TWO = "models: [{model: x}, {model: y}]\nbase_model: b\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("merge_method: [", "m.yaml: not valid YAML: "),
        ("- a\n- b\n", "m.yaml: a mergekit config is a mapping (merge_method: ..., models: ...)"),
        ("1: x\n", "m.yaml: keys must be strings, not 1"),
        (TWO, "m.yaml: merge_method is missing (e.g. merge_method: ties)"),
        (
            TWO + "merge_method: tiez\n",
            "m.yaml: unknown merge_method 'tiez' (did you mean ties?); supported: linear,",
        ),
        (
            TWO + "merge_method: passthrough\n",
            "m.yaml: merge_method passthrough is not supported (it assembles layers",
        ),
        (TWO + "merge_method: ties\nmodles: []\n", "m.yaml: unknown key 'modles' (did you mean models?)"),
        (
            "merge_method: ties\nslices: []\n",
            "m.yaml: slices: slices (layer ranges from several models) are not supported: merge whole models",
        ),
        ("merge_method: ties\nmodules: {}\n", "m.yaml: modules: modules are not supported"),
        (
            TWO + "merge_method: ties\ntokenizer_source: base\n",
            "m.yaml: tokenizer_source: tokenizer settings are not",
        ),
        (
            TWO + "merge_method: ties\nchat_template: chatml\n",
            "m.yaml: chat_template: chat templates are not supported",
        ),
        ("merge_method: ties\nbase_model: b\n", "m.yaml: models must be a non-empty list of {model: NAME"),
        ("merge_method: ties\nbase_model: b\nmodels: [3]\n", "m.yaml: models[0]: must be a mapping"),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{name: x}]\n",
            "m.yaml: models[0]: unknown key 'name' (model, parameters)",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{parameters: {}}]\n",
            "m.yaml: models[0]: model is missing",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: x}, {model: x}]\n",
            "m.yaml: models[1]: model 'x' is listed twice",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: 'x+lora'}, y]\n",
            "m.yaml: models[0].model: 'x+lora': model+LoRA references are not supported",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: {path: x}}, y]\n",
            "m.yaml: models[0].model: only a model name is supported here",
        ),
        (
            "merge_method: ties\nbase_model: 3\nmodels: [x, y]\n",
            "m.yaml: base_model: must be a model name, not 3",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: b, parameters: {weight: 1}}, x, y]\n",
            "m.yaml: base_model 'b' is also a model with parameters",
        ),
        (
            "merge_method: ties\nmodels: [x, y]\n",
            "m.yaml: merge_method ties needs a base_model (the merge base)",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [x]\n",
            "m.yaml: ties needs at least two models besides the base_model, not 1",
        ),
        ("merge_method: nuslerp\nmodels: [x, y, z]\n", "m.yaml: nuslerp takes exactly two models, not 3"),
        (
            "merge_method: slerp\nbase_model: b\nmodels: [x, y]\n",
            "m.yaml: slerp takes a base_model and exactly one other model",
        ),
        (
            "merge_method: karcher\nbase_model: b\nmodels: [x, y]\n",
            "m.yaml: karcher with a base_model (mergekit averages",
        ),
        (
            TWO + "merge_method: ties\nparameters: [1]\n",
            "m.yaml: parameters: must be a mapping of parameter: value",
        ),
        (
            TWO + "merge_method: ties\nparameters: {densty: 0.2}\n",
            "m.yaml: parameters.densty: ties has no parameter 'densty' (did you mean density?)",
        ),
        (
            TWO + "merge_method: ties\nparameters: {conventions: paper}\n",
            "m.yaml: parameters.conventions: not a mergekit parameter (implied",
        ),
        (
            TWO + "merge_method: dare_ties\nparameters: {drop: 0.5}\n",
            "m.yaml: parameters.drop: not a mergekit parameter (use density",
        ),
        (
            "merge_method: ties\nbase_model: b\nmodels: [{model: x, parameters: {lambda: 2}}, y]\n",
            "m.yaml: models[0].parameters.lambda: lambda cannot be set per model "
            "(per-model parameters: weight, density)",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: 1.5}\n",
            "m.yaml: parameters.density: parameter density must be in (0, 1], not 1.5",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [0.1, 2]}\n",
            "m.yaml: parameters.density: parameter density must be in (0, 1], not 2.0",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [0.1, x]}\n",
            "m.yaml: parameters.density: a gradient is a list of numbers",
        ),
        (
            TWO + "merge_method: ties\nparameters: {normalize: [1, 0]}\n",
            "m.yaml: parameters.normalize: normalize is a bool; gradients are for numbers",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: []}\n",
            "m.yaml: parameters.density: an empty list",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [{filter: a}]}\n",
            "m.yaml: parameters.density[0]: value is missing",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [{value: 0.1, when: a}]}\n",
            "m.yaml: parameters.density[0]: unknown key 'when' (filter, value)",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [{value: 0.1, filter: 3}]}\n",
            "m.yaml: parameters.density[0].filter: must be a string, not 3",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: [{value: {a: 1}}]}\n",
            "m.yaml: parameters.density[0].value: must be a value or a list of numbers",
        ),
        (
            TWO + "merge_method: ties\nparameters: {density: null}\n",
            "m.yaml: parameters.density: None is not a parameter value",
        ),
        (
            TWO + "merge_method: ties\nparameters: {normalize: maybe}\n",
            "m.yaml: parameters.normalize: parameter normalize must be true or false",
        ),
        (
            TWO + "merge_method: della\nparameters: {density: 0.1}\n",
            "della needs density - epsilon > 0 and density + epsilon <= 1",
        ),
        (
            "merge_method: della\nbase_model: b\n"
            "models: [{model: x, parameters: {density: [0.5, 0.1]}}, y]\n",
            "m.yaml: models[0]: della needs density - epsilon > 0",
        ),
        (  # the middle knot of a gradient breaks the rule
            "merge_method: della\nbase_model: b\nparameters: {epsilon: [0.1, 0.3]}\n"
            "models: [{model: x, parameters: {density: [0.5, 0.2, 0.5]}}, y]\n",
            "m.yaml: models[0]: della needs density - epsilon > 0 and density + epsilon <= 1 "
            "(keep probabilities in (0, 1]), not density=0.2, epsilon=0.2",
        ),
        (
            "merge_method: linear\n"
            "models: [{model: x, parameters: {weight: 1}}, {model: y, parameters: {weight: -1}}]\n",
            "m.yaml: linear weights sum to 0 and normalize is true",
        ),
        (
            TWO + "merge_method: ties\ndtype: float8\n",
            "m.yaml: dtype: 'float8' is not one of float32, float64, float16, bfloat16",
        ),
        (TWO + "merge_method: ties\nout_dtype: int4\n", "m.yaml: out_dtype: 'int4' is not one of"),
    ],
)
def test_every_error_names_what_is_wrong(text: str, message: str) -> None:
    assert message in recipe_error(text)


def test_sizes_are_bounded() -> None:
    assert "larger than 1048576 bytes" in recipe_error("#" * (1 << 20) + "\nmerge_method: ties\n")
    with pytest.raises(MergeConfigError, match="larger than"):
        load_recipe(b"#" * ((1 << 20) + 1), "m.yaml")
    with pytest.raises(MergeConfigError, match="not UTF-8"):
        load_recipe(b"merge_method: \xff\n", "m.yaml")
    models = "".join(f"  - model: m{i}\n" for i in range(1025))
    assert "1025 models; at most 1024" in recipe_error(
        f"merge_method: ties\nbase_model: b\nmodels:\n{models}"
    )
    # aliases cannot multiply the work: one gradient aliased into every model
    grad = "[" + ", ".join(["0.5"] * 100) + "]"
    lines = "".join(f"  - {{model: m{i}, parameters: {{weight: *g}}}}\n" for i in range(200))
    text = f"merge_method: linear\nparameters: {{weight: &g {grad}}}\nmodels:\n{lines}"
    assert "the config is too large (more than 20000 items)" in recipe_error(text)


def test_the_recipe_is_a_plain_value() -> None:
    r = load_recipe(TIES, "merge.yaml")
    assert isinstance(r, Recipe) and r == load_recipe(TIES, "merge.yaml")
    assert load_recipe(TIES.encode(), "merge.yaml") == r
