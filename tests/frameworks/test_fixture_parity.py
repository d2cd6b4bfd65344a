"""Every case of the torch fixture set through the framework's glue: the reference's numbers, or a clean
refusal of a feature the spec marks unsupported for this framework. Anything else fails."""
from __future__ import annotations

import numpy as np

import _support


def _refusal_problem(glue_pkg, module, exc, used):
    """None when `exc` is a legitimate refusal for a case using features `used`, else why not."""
    if not isinstance(exc, glue_pkg.UnsupportedFeature) or not isinstance(exc, ValueError):
        return f"{type(exc).__name__} is not mha_glue.UnsupportedFeature (a ValueError)"
    status = module.SUPPORT.get(exc.feature, ("<not a spec feature>", ""))[0]
    if status != "unsupported":
        return f"refused feature `{exc.feature}`, which the spec marks {status!r} for {module.FRAMEWORK}"
    if exc.feature not in used:
        return f"refused feature `{exc.feature}`, which this case does not use (it uses {sorted(used)})"
    text = str(exc)
    if module.FRAMEWORK not in text or exc.feature not in text or not exc.why:
        return f"refusal message must name the framework, the feature and why: {text!r}"
    return None


def test_fixture_case(glue, fixture_case, case_tensors, record_property):
    glue_pkg, module = glue
    used = _support.case_features(fixture_case, case_tensors)
    unsupported = sorted(f for f in used if module.SUPPORT[f][0] == "unsupported")
    try:
        layer = module.build(**fixture_case["ctor"])
        module.load_state_dict(layer, _support.params_of(fixture_case, case_tensors))
        out, weights = module.forward(layer, **_support.call_inputs(fixture_case, case_tensors))
    except glue_pkg.UnsupportedFeature as exc:
        problem = _refusal_problem(glue_pkg, module, exc, used)
        assert problem is None, problem
        record_property("mha_outcome", "refused")
        record_property("mha_refused_feature", exc.feature)
        return
    assert not unsupported, (
        f"the spec marks {unsupported} unsupported for {module.FRAMEWORK}, yet the glue ran the case "
        "instead of raising UnsupportedFeature"
    )
    problems = [_support.mismatch(out, case_tensors["attn_output"], "attn_output")]
    if fixture_case["forward"]["need_weights"]:
        problems.append(_support.mismatch(weights, case_tensors["attn_weights"], "attn_weights"))
    elif weights is not None:
        problems.append(f"attn_weights: need_weights=False must give None, got {type(weights).__name__}")
    problems = [p for p in problems if p]
    note = fixture_case.get("precision_sensitive")
    assert not problems, "; ".join(problems) + (f" [precision-sensitive case: {note}]" if note else "")
    record_property("mha_outcome", "matched")


def test_fixture_set_is_complete(fixture_index):
    """Each case's safetensors file exists and holds what index.json lists."""
    folder = _support.fixtures_dir()
    assert fixture_index["cases"], "the fixture set has no cases"
    for case in fixture_index["cases"]:
        tensors = _support.load_tensors(folder / case["file"])
        listed = case["tensors"]
        assert sorted(tensors) == sorted(listed), case["name"]
        for name, meta in listed.items():
            assert list(tensors[name].shape) == meta["shape"], (case["name"], name)
            assert str(np.dtype(tensors[name].dtype)) == meta["dtype"], (case["name"], name)
