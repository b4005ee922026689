"""`capshap explain --help`: options in groups, each registered option listed once."""

import contextlib
import io

import pytest

from capshap.captioners import CAPTIONERS
from capshap.cli.parser import build_parser

GROUPS = ["input", "captioner", "scoring", "masking and tree", "budget", "output", "scale (several images at once, Ray)"]


def _explain():
    return build_parser()._subparsers._group_actions[0].choices["explain"]


def _help_text() -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        build_parser().parse_args(["explain", "--help"])
    return buf.getvalue()


def test_explain_options_are_grouped_in_order_and_every_option_is_in_a_group():
    e = _explain()
    titles = [g.title for g in e._action_groups if g._group_actions]
    assert titles[titles.index("input"):] == GROUPS
    grouped = {a.dest for g in e._action_groups if g.title in GROUPS for a in g._group_actions}
    every = {a.dest for a in e._actions if a.dest != "help"}
    assert every == grouped
    text = _help_text()
    pos = [text.index(f"\n{t}:\n") for t in GROUPS]
    assert pos == sorted(pos)
    # a few options land where a user looks for them
    for title, dest in (("input", "paths"), ("captioner", "captioner_opt"), ("scoring", "caption"),
                        ("masking and tree", "tree"), ("budget", "max_evals"), ("output", "out"),
                        ("scale (several images at once, Ray)", "in_flight")):
        group = next(g for g in e._action_groups if g.title == title)
        assert dest in {a.dest for a in group._group_actions}


def test_each_registered_option_list_is_shown_once():
    text = _help_text()
    azure = [e for e in CAPTIONERS if e.name.startswith("azure")]
    assert len(azure) >= 2 and len({e.options for e in azure}) == 1
    listed = ", ".join(azure[0].options)
    assert text.count(listed) == 1
    for e in azure[1:]:
        assert f"(options: as {azure[0].name})" in text


def test_caption_help_does_not_restrict_the_scorer():
    action = next(a for a in _explain()._actions if a.dest == "caption")
    assert "any scorer" in action.help and "(own-head and surrogate scorers)" not in action.help


def test_grouping_keeps_option_names_and_defaults():
    args = build_parser().parse_args(["explain", "x.jpg"])
    assert (args.out, args.captioner, args.scorer, args.max_evals, args.batch_size, args.mask, args.tree) == (
        "out", "builtin", "auto", 300, 50, "inpaint_ns", "axis")
    assert (args.max_side, args.no_resize, args.in_flight, args.ray, args.quiet, args.verbose) == (
        500, False, None, None, False, 0)
    with pytest.raises(SystemExit):  # still mutually exclusive inside their group
        build_parser().parse_args(["explain", "x.jpg", "--max-side", "100", "--no-resize"])
