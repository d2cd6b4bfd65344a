"""Helpers every op's glue uses (numpy only): keyword checking with suggestions, checkpoint prefixes,
support tables and `UnsupportedFeature`. Nothing here knows an op: each op's modules pass their spec's
facts in."""
import difflib
import functools
import inspect
from collections.abc import Mapping

import numpy as np

SUPPORT_STATUSES = ("native", "emulated", "unsupported")


def did_you_mean(name, candidates):
    """' (did you mean `x`?)' when a candidate is close to `name`, else ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def keywords(fn, spec_names=()):
    """Wraps `fn` so that a misspelt keyword argument is a TypeError that suggests the closest one.

    Keywords that `fn` collects in **kwargs (native constructor extras) pass through, unless they are
    close to one of its own parameters or to `spec_names` (the op's parameter and argument names).
    """
    params = inspect.signature(fn).parameters
    named = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    collects = any(p.kind == p.VAR_KEYWORD for p in params.values())
    known = named + [n for n in spec_names if n not in named]

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        for name in kwargs:
            if name in named:
                continue
            hint = did_you_mean(name, known)
            if hint or not collects:
                raise TypeError(f"{fn.__module__}.{fn.__name__}() got an unexpected keyword argument `{name}`{hint}")
        return fn(*args, **kwargs)

    return checked


def layer_prefixes(state, weight_names):
    """The prefixes under which `state` holds an op's weights (`weight_names`, e.g. "layers.0.self_attn."),
    in order."""
    found = {}
    for name in state:
        for weight in weight_names:
            head = name[: len(name) - len(weight)]
            if name.endswith(weight) and (head == "" or head.endswith(".")):
                found[head] = found.get(head, 0) + 1
    return [p for p, n in found.items() if n >= 2]


def prefix_hint(prefix, held, op):
    """'; did you mean `p`? ...' naming the prefix of `held` (those that hold `op` weights) closest to `prefix`."""
    if not held:
        return ""
    # One that holds what was given (`self_attn` -> `layers.0.self_attn.`), else the closest, else the first.
    given = prefix.rstrip(".")
    close = [p for p in held if given and given in p] or difflib.get_close_matches(prefix, held, n=1, cutoff=0.5)
    first = close[0] if close else held[0]
    return f"; did you mean `{first}`? (it holds {op} weights under {held[:8]}{' ...' if len(held) > 8 else ''})"


def check_mapping(framework, state):
    """`state` must be a mapping with string keys (the reference's state_dict names)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{framework}: the state must be a mapping of reference state_dict names to arrays, got {type(state).__name__}")
    for key in state:
        if not isinstance(key, str):
            raise TypeError(f"{framework}: state key {key!r} ({type(key).__name__}) is not a string; keys are the reference's state_dict names")


def select_prefix(framework, state, prefix, op, weight_names):
    """The entries of `state` under `prefix`, with the prefix taken off (all of them for "")."""
    if not isinstance(prefix, str):
        raise TypeError(f"{framework}: prefix must be a str, got {prefix!r}")
    check_mapping(framework, state)
    if not prefix:
        return state
    picked = {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
    if not picked:
        held = layer_prefixes(state, weight_names)
        raise ValueError(f"{framework}: no weight under the prefix `{prefix}`{prefix_hint(prefix, held, op)}")
    return picked


class UnsupportedFeature(ValueError):
    """The target framework cannot run this configuration or call exactly, and the glue does not emulate it."""

    def __init__(self, framework, feature, why, op="", what=""):
        self.framework = framework
        self.feature = feature
        self.why = why
        self.op = op
        detail = f" ({what})" if what else ""
        of = f"{op} feature" if op else "feature"
        super().__init__(f"{framework} does not support {of} `{feature}`{detail}: {why}")


def support_table(features, listed):
    """The full support table over `features` (names): every feature, unlisted ones native."""
    table = {}
    for name in features:
        status, note = listed.get(name, ("native", ""))
        if status not in SUPPORT_STATUSES:
            raise ValueError(f"feature {name!r}: unknown support status {status!r}")
        table[name] = (status, note)
    unknown = set(listed) - set(features)
    if unknown:
        raise ValueError(f"support table names unknown features: {sorted(unknown)}")
    return table


def plain(value):
    """A numpy scalar as the Python bool, int or float it holds (native layers want those)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# Constraint messages: one format, shared with the Rust side (the runtime's and the macro's checks):
#   "{Op}: `{name}` must {requirement}, got {value}"
# with requirement `be positive`, "divide `{other}` ({other_value})", `be at least {bound}`,
# `be below {bound}`, or (Python only, where a value's type is not fixed) `be a bool`, `be an int`,
# `be a float`. Values and bounds as Python's repr writes them (1.0, not 1).
def constraint_message(op, name, requirement, value):
    """The one message of a parameter that violates a constraint."""
    return f"{op}: `{name}` must {requirement}, got {value!r}"


_TYPE_REQUIREMENTS = {"bool": "be a bool", "int": "be an int", "optional_int": "be an int", "float": "be a float"}


def _type_ok(kind, value):
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if isinstance(value, (bool, np.bool_)):
        return False
    if kind in ("int", "optional_int"):
        return isinstance(value, (int, np.integer)) or (value is None and kind == "optional_int")
    if kind == "float":
        return isinstance(value, (int, float, np.floating, np.integer))
    raise ValueError(f"unknown parameter type {kind!r}")


def _requirement(constraint, value, scope):
    """The requirement `constraint` puts on `value`, and whether `value` meets it."""
    if constraint == "positive":
        return "be positive", value > 0
    if isinstance(constraint, dict) and "divides" in constraint:
        other = constraint["divides"]
        total = scope[other]
        return f"divide `{other}` ({total!r})", value != 0 and total % value == 0
    if isinstance(constraint, dict) and "at_least" in constraint:
        bound = constraint["at_least"]
        return f"be at least {bound!r}", value >= bound
    if isinstance(constraint, dict) and "below" in constraint:
        bound = constraint["below"]
        return f"be below {bound!r}", value < bound
    raise ValueError(f"unknown constraint {constraint!r}")


def check_param(op, name, kind, value, constraints, scope):
    """Checks one parameter of type `kind` against its spec `constraints` (`scope`: the other given
    values, which `divides` reads). Raises TypeError or ValueError with the one message format."""
    if not _type_ok(kind, value):
        raise TypeError(constraint_message(op, name, _TYPE_REQUIREMENTS[kind], value))
    if value is None:
        return
    for constraint in constraints:
        requirement, ok = _requirement(constraint, value, scope)
        if not ok:
            raise ValueError(constraint_message(op, name, requirement, value))


def permute(array, from_dims, to_dims):
    """`array` with its axes reordered from the named layout `from_dims` to `to_dims` (the spec's
    `shape` and a framework's `layouts` entry, e.g. ("...", "Hq", "L", "E") -> ("...", "L", "Hq", "E")).
    "..." stands for any number of leading axes, which stay first and in order."""
    array = np.asarray(array)
    if sorted(from_dims) != sorted(to_dims) or len(set(from_dims)) != len(from_dims):
        raise ValueError(f"layouts {tuple(from_dims)} and {tuple(to_dims)} do not name the same dimensions")
    named = [d for d in from_dims if d != "..."]
    lead = array.ndim - len(named)
    if lead < 0 or (lead > 0 and "..." not in from_dims):
        raise ValueError(f"an array of rank {array.ndim} does not have the layout {tuple(from_dims)}")
    axis = {d: lead + i for i, d in enumerate(named)}
    order = list(range(lead)) + [axis[d] for d in to_dims if d != "..."]
    return np.transpose(array, order)
