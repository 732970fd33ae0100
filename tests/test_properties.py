"""Issue 6: property tests for --param parsing, name resolution and the input generator."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zoo.errors import ParameterError, UnknownArchitectureError, UsageError
from zoo.spec.architecture import FLOAT_DTYPES, INT_DTYPES, Architecture, Dim, Input, Output, Parameter
from zoo.spec.params import format_value, parse_params
from zoo.spec.registry import DuplicateName, Registry

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- --param parsing ----------------------------------------------------------------

ints = st.integers(-(10**12), 10**12)
floats = st.floats(allow_nan=False)  # inf and -0.0 included: str() of them parses back
TYPED = [
    (int, ints),
    (float, floats),
    (bool, st.booleans()),
    (str, st.text().filter(lambda s: "\x00" not in s)),
    (tuple[int, ...], st.lists(ints, min_size=1, max_size=5).map(tuple)),  # an empty value is refused
    (tuple[int, int], st.tuples(ints, ints)),
    (Literal["none", "relu", "gelu"], st.sampled_from(["none", "relu", "gelu"])),
    (int | None, st.none() | ints),
    (typing.Optional[float], st.none() | floats),
]


@FAST
@given(st.sampled_from(range(len(TYPED))).flatmap(lambda i: st.tuples(st.just(TYPED[i][0]), TYPED[i][1])))
def test_param_round_trip(pair):
    # what 'zoo show' prints for a value, --param parses back to the same value
    annotation, value = pair
    params = {"p": Parameter("p", annotation, None)}
    assert parse_params([f"p={format_value(value)}"], params, "arch") == {"p": value}


@FAST
@given(st.sampled_from([t for t, _ in TYPED]), st.text(max_size=30))
def test_any_text_parses_or_is_a_parameter_error(annotation, text):
    # never a ValueError, TypeError or traceback: a typed value or one clear ParameterError
    params = {"p": Parameter("p", annotation, None)}
    try:
        value = parse_params([f"p={text}"], params, "arch")["p"]
    except ParameterError as exc:
        assert "arch" in str(exc) and "\n" not in str(exc)
        return
    origin = typing.get_origin(annotation)
    if annotation in (int, float, bool, str):
        assert type(value) is annotation
    elif origin is tuple:
        assert isinstance(value, tuple)
    elif origin is Literal:
        assert value in typing.get_args(annotation)


@pytest.mark.parametrize("text", ["", " ", "4,,3", "4,3,", ",4", " , "])
@pytest.mark.parametrize("annotation", [tuple[int, ...], tuple[int, int], tuple[int, ...] | None])
def test_empty_tuple_values_and_items_are_refused(annotation, text):
    # 'hidden=' must not silently build no hidden layers, nor 'hidden=4,,3' read as 4,3
    params = {"hidden": Parameter("hidden", annotation, (4, 3))}
    if text.strip() == "" and type(None) in typing.get_args(annotation):
        assert parse_params([f"hidden={text}"], params, "arch") == {"hidden": None}  # the spelling of None
        return
    with pytest.raises(ParameterError, match="empty"):
        parse_params([f"hidden={text}"], params, "arch")


@FAST
@given(st.lists(ints, min_size=1, max_size=4), st.data())
def test_an_empty_item_anywhere_is_refused(values, data):
    items = [str(v) for v in values]
    items.insert(data.draw(st.integers(0, len(items))), "")
    with pytest.raises(ParameterError, match="empty"):
        parse_params(["hidden=" + ",".join(items)], {"hidden": Parameter("hidden", tuple[int, ...], (4, 3))}, "arch")


def test_an_empty_tuple_from_python_reads_back_from_json():
    from zoo.spec.params import coerce_params

    params = {"hidden": Parameter("hidden", tuple[int, ...], (4, 3))}
    assert coerce_params({"hidden": []}, params, "arch") == {"hidden": ()}
    assert coerce_params({"hidden": [4, 3]}, params, "arch") == {"hidden": (4, 3)}


@FAST
@given(st.text(max_size=20), st.text(max_size=10))
def test_unknown_keys_are_refused_with_the_valid_list(key, text):
    params = {"in_features": Parameter("in_features", int, 8)}
    assume(key.strip().replace("-", "_") != "in_features")
    with pytest.raises(ParameterError) as info:
        parse_params([f"{key}={text}"], params, "arch")
    assert "in_features" in str(info.value)  # the message lists what is valid


# -- name resolution ------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    name: str
    aliases: tuple[str, ...] = ()
    plugin: str = "p"


names = st.text(alphabet="ab-", min_size=1, max_size=4)  # a tiny alphabet: prefixes collide often


@st.composite
def registries(draw):
    registry: Registry[Item] = Registry("architecture")
    for name in draw(st.lists(names, min_size=1, max_size=6, unique=True)):
        aliases = tuple(draw(st.lists(names, max_size=2, unique=True)))
        try:
            registry.add(Item(name, tuple(a for a in aliases if a != name)))
        except DuplicateName:
            pass  # refused whole: checked below that nothing of it was kept
    return registry


@FAST
@given(registries(), st.text(alphabet="ab-c", max_size=5))
def test_resolution_matches_its_definition(registry, query):
    items = list(registry)
    keys = {key: item for item in items for key in (item.name, *item.aliases)}
    exact = keys.get(query)
    owners = {item.name for key, item in keys.items() if key.startswith(query)}
    try:
        found = registry.resolve(query)
    except UnknownArchitectureError as exc:
        assert exact is None and not owners and query.strip()
        assert repr(query) in str(exc)
        return
    except UsageError as exc:  # ambiguous, or empty
        assert exact is None and (len(owners) > 1 or not query.strip())
        if query.strip():
            assert all(name in str(exc) for name in owners)  # every candidate is named
        return
    assert found == (exact or keys[next(k for k in keys if k.startswith(query))])
    assert exact is not None or len(owners) == 1


@FAST
@given(registries())
def test_every_name_and_alias_resolves_to_its_owner(registry):
    for item in registry:
        assert registry.resolve(item.name) is item
        for alias in item.aliases:
            assert registry.resolve(alias) is item
    # a refused registration kept nothing: every key belongs to exactly one item
    all_keys = [key for item in registry for key in (item.name, *item.aliases)]
    assert len(all_keys) == len(set(all_keys))


# -- the input generator ----------------------------------------------------------------


def _build(width: int = 3, vocab: int = 10):
    raise AssertionError("the generator never builds")


SEQ = Dim("seq", sample=3)  # one declaration: two that differ are refused (test_spec_validation)


@st.composite
def input_specs(draw):
    dtype = draw(st.sampled_from([*FLOAT_DTYPES, *INT_DTYPES, "bool"]))
    dims = draw(
        st.lists(
            st.one_of(st.integers(1, 4), st.sampled_from(["width", "batch", "seq"]), st.just(SEQ)),
            max_size=4,
        )
    )
    bounds = None
    if dtype in INT_DTYPES:
        info = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1)}.get(dtype, (-(2**31), 2**31 - 1))
        low = draw(st.integers(info[0], info[1]))
        high = draw(st.just("vocab") | st.integers(low + 1, info[1] + 1))
        bounds = (low, high)
    elif dtype in FLOAT_DTYPES and draw(st.booleans()):
        low = draw(st.floats(-1000, 1000))
        bounds = (low, low + draw(st.floats(0.01, 1000)))
    return dtype, tuple(dims), bounds


@settings(max_examples=80, deadline=None)
@given(st.lists(input_specs(), min_size=1, max_size=3), st.integers(1, 6), st.integers(1, 40), st.integers(1, 5), st.integers(1, 7), st.integers(0, 2**31))
def test_generated_inputs_have_declared_shape_dtype_and_range(specs, width, vocab, batch, seq, seed):
    import torch

    from zoo.build.model import make_inputs

    inputs = []
    for index, (dtype, dims, bounds) in enumerate(specs):
        if bounds is not None and bounds[1] == "vocab":
            assume(bounds[0] < vocab)
        inputs.append(Input(f"in{index}", dims, dtype=dtype, range=bounds))
    arch = Architecture(name="gen", build=_build, inputs=tuple(inputs), outputs=(Output("y"),))
    params = {"width": width, "vocab": vocab}
    sizes = {"batch": batch, "seq": seq}
    try:
        made = make_inputs(arch, params, sizes, seed)
    except ParameterError as exc:
        # only right where the dtype has no value in [low, high) at all (bfloat16 [128.5, 129))
        name = str(exc).split("'")[1]
        inp = next(i for i in inputs if i.name == name)
        low, high = inp.range
        grid = torch.linspace(low, high, 10001, dtype=torch.float64).to(getattr(torch, inp.dtype)).double()
        assert "holds no" in str(exc) and not ((grid >= low) & (grid < high)).any()
        return
    assert list(made) == [inp.name for inp in inputs]
    for inp in inputs:
        tensor = made[inp.name]
        want = tuple(d if isinstance(d, int) else {**params, **sizes}[str(d)] for d in inp.shape)
        assert tuple(tensor.shape) == want
        assert tensor.dtype == getattr(torch, inp.dtype)
        if inp.range is not None and tensor.numel():
            low, high = (params[b] if isinstance(b, str) else b for b in inp.range)
            values = tensor.double()
            assert values.min().item() >= low, (inp, values.min())
            assert values.max().item() < high, (inp, values.max())  # half-open: [low, high)
        if inp.dtype == "bool":
            assert tensor.dtype == torch.bool
    again = make_inputs(arch, params, sizes, seed)  # seeded: the same inputs every time
    assert all(torch.equal(made[k], again[k]) for k in made)


@FAST
@given(st.integers(-5, 0), st.sampled_from(["width", "batch"]))
def test_non_positive_sizes_are_parameter_errors(size, dim):
    from zoo.build.model import make_inputs

    arch = Architecture(name="gen", build=_build, inputs=(Input("x", ("batch", "width")),), outputs=(Output("y"),))
    params, sizes = {"width": 3, "vocab": 10}, {"batch": 2}
    (params if dim == "width" else sizes)[dim] = size
    with pytest.raises(ParameterError, match=dim):
        make_inputs(arch, params, sizes, 0)


@FAST
@given(st.integers(-3, 0))
def test_empty_token_range_is_a_parameter_error(vocab):
    from zoo.build.model import make_inputs

    arch = Architecture(name="gen", build=_build, inputs=(Input("ids", ("batch", 4), dtype="int64", range=(0, "vocab")),), outputs=(Output("y"),))
    with pytest.raises(ParameterError, match="vocab"):
        make_inputs(arch, {"width": 3, "vocab": vocab}, {"batch": 2}, 0)
