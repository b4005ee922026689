"""The public API: small, names that say what they are, old names kept one release with a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import capshap


def test_every_public_name_resolves():
    for name in capshap.__all__:
        assert getattr(capshap, name) is not None, name


def test_factories_are_named_as_factories_and_scorers_as_scorers():
    from capshap.interfaces import Scorer, ScorerFactory

    for name in ("OwnHeadFactory", "PresenceFactory", "SurrogateFactory"):
        cls = getattr(capshap, name)
        assert not issubclass(cls, Scorer) and hasattr(cls, "bind"), name
    assert issubclass(capshap.FunctionScorer, Scorer) and not issubclass(capshap.FunctionScorer, ScorerFactory)
    assert callable(capshap.owen_values) and capshap.owen_values.__name__ == "owen_values"
    assert capshap.superpixel_tree.__name__ == "superpixel_tree"


@pytest.mark.parametrize("old, new", [
    ("OwnHead", "OwnHeadFactory"), ("PresenceScorer", "PresenceFactory"), ("SurrogateScorer", "SurrogateFactory"),
    ("segments", "superpixel_tree"),
])
def test_old_names_still_work_with_a_deprecation_warning(old, new):
    with pytest.warns(DeprecationWarning, match=new):
        obj = getattr(capshap, old)
    assert obj is getattr(capshap, new)


def test_owen_is_the_module_and_still_callable_with_a_warning():
    from capshap.regions.axis import axis_aligned

    tree = axis_aligned(4, 4)

    def f(coalitions):
        return np.array([[float(len(c))] for c in coalitions])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = capshap.owen_values(tree, f, max_evals=20, batch_size=10)
    with pytest.warns(DeprecationWarning, match="owen_values"):
        old = capshap.owen(tree, f, max_evals=20, batch_size=10)
    np.testing.assert_array_equal(old.node_values, ref.node_values)
    assert capshap.owen.OwenResult is capshap.OwenResult  # and it is the module
    with pytest.warns(DeprecationWarning):
        from capshap.owen import owen  # noqa: F401


def test_make_scorer_is_deprecated():
    with pytest.warns(DeprecationWarning):
        capshap.make_scorer  # noqa: B018
