"""Name resolution and listing, on the real built-in registry."""

from __future__ import annotations

import pytest

from zoo.errors import UnknownArchitectureError, UsageError


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("binary-sigmoid", "binary-sigmoid"),  # exact
        ("binary", "binary-sigmoid"),  # alias
        ("multi", "multiclass-softmax"),  # unique prefix of a name
        ("sta", "three-layer-stack"),  # unique prefix of an alias
        ("three", "three-layer-stack"),
    ],
)
def test_resolve(zoo, query, name):
    assert zoo.architecture(query).name == name


def test_unknown_name_suggests_close_matches(zoo):
    with pytest.raises(UnknownArchitectureError, match="did you mean .*binary"):
        zoo.architecture("binry")


def test_unknown_name_without_close_match_points_to_list(zoo):
    with pytest.raises(UnknownArchitectureError, match="zoo list"):
        zoo.architecture("resnet")


def test_ambiguous_prefix_lists_candidates(zoo):
    # every seed name and alias contains an "i"; "b" alone is unique, so build a real ambiguity
    from zoo.spec.architecture import Architecture, Input, Output

    zoo.architectures.add(
        Architecture(name="binary-tanh", build=lambda: None, inputs=(Input("x", ("batch", 2)),), outputs=(Output("y"),), plugin="t")
    )
    with pytest.raises(UsageError, match="ambiguous: it could be binary-sigmoid, binary-tanh"):
        zoo.architecture("bin")
    assert zoo.architecture("binary").name == "binary-sigmoid"  # an alias still wins over prefixes


def test_filter_wildcards(zoo):
    assert [a.name for a in zoo.architectures.filter("*soft*")] == ["multiclass-softmax"]
    assert [a.name for a in zoo.architectures.filter("stack")] == ["three-layer-stack"]  # substring, alias too
    assert len(zoo.architectures.filter(None)) == 3
    assert zoo.architectures.filter("nothing*") == []
