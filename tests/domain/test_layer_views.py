"""The layer views a request may ask for (`escrow_views`): its shape, and the caps that keep an
answer bounded, checked without a model (broker/hosting/engine.py has no torch). The views'
values are tested end to end in tests/hosted/test_hosted.py."""

from __future__ import annotations

import pytest

from broker.domain.hosting import internals_asked
from broker.errors import BadRequest
from broker.hosting.engine import (
    MAX_VIEW_NUMBERS,
    MAX_VIEW_TOKENS,
    Sampling,
    Views,
    check_views,
    with_views,
)


def test_a_request_names_layers_and_they_are_kept_sorted_and_once():
    asked = with_views(Sampling(), {"escrow_views": {"hidden_states": [2, 0, 2],
                                                     "attention": [1]}})
    assert asked.views == Views((0, 2), (1,))
    assert with_views(Sampling(), {}).views is None


@pytest.mark.parametrize("views", [
    [1], {"hidden": [1]}, {"hidden_states": 1}, {"hidden_states": [True]},
    {"hidden_states": [-1]}, {"hidden_states": [1.0]}, {"hidden_states": []}, {},
    {"attention": [0, 1, 2, 3, 4]},
])
def test_a_malformed_request_is_a_400_with_an_example(views):
    with pytest.raises(BadRequest) as refused:
        with_views(Sampling(), {"escrow_views": views})
    assert refused.value.hint


def test_layers_out_of_the_models_range_are_refused_naming_the_range():
    check_views(Views((0, 12), (1, 12)), layers=12, heads=12, width=768, tokens=64)
    with pytest.raises(BadRequest) as refused:
        check_views(Views((13,)), layers=12, heads=12, width=768, tokens=64)
    assert "layers 0 to 12" in refused.value.message
    with pytest.raises(BadRequest) as refused:
        check_views(Views((), (0,)), layers=12, heads=12, width=768, tokens=64)
    assert "no attention" in refused.value.hint


def test_the_caps_keep_an_answer_bounded():
    with pytest.raises(BadRequest) as refused:
        check_views(Views((1,)), layers=2, heads=2, width=64, tokens=MAX_VIEW_TOKENS + 1)
    assert f"at most {MAX_VIEW_TOKENS} tokens" in refused.value.message
    assert "fewer tokens" in refused.value.hint
    # a wide model: 4 layers of 4096-wide vectors over 256 tokens is 4M numbers
    with pytest.raises(BadRequest) as refused:
        check_views(Views((1, 2, 3, 4)), layers=32, heads=32, width=4096, tokens=256)
    assert f"more than {MAX_VIEW_NUMBERS}" in refused.value.message
    assert "name fewer layers" in refused.value.hint
    check_views(Views((1,)), layers=32, heads=32, width=4096, tokens=200)


def test_layer_views_are_a_research_view_whatever_else_the_body_says():
    for chat in (True, False):
        assert internals_asked({"escrow_views": {"hidden_states": [1]}}, chat)
        assert internals_asked({"escrow_views": "nonsense"}, chat)  # refused, then checked
        assert not internals_asked({"escrow_views": None, "max_tokens": 3}, chat)
