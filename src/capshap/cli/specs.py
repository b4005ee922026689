"""Command-line specs that are not registries: ``--generate`` settings."""

from __future__ import annotations

from typing import Any

from capshap.captioners import CAPTIONERS, build_captioner
from capshap.regions import TREES, parse_tree
from capshap.regions.user import TreeSource, read_label_map, resize_nearest
from capshap.registry import SpecError, parse_options
from capshap.scoring import DEFAULT_SURROGATE, SCORERS, build_scorer

__all__ = ["SpecError", "parse_generate", "build_captioner", "build_scorer", "parse_tree", "TreeSource",
           "read_label_map", "resize_nearest", "CAPTIONER_HELP", "SCORER_HELP", "TREE_HELP", "DEFAULT_SURROGATE"]

CAPTIONER_HELP = CAPTIONERS.help_text()
SCORER_HELP = SCORERS.help_text()
TREE_HELP = TREES.help_text()


def parse_generate(text: str) -> dict[str, Any]:
    """``--generate`` settings: ``"max_new_tokens=20,num_beams=3,do_sample=false"`` -> a dict
    with ints, floats, booleans and None converted; anything else stays a string."""
    return parse_options(text, "--generate")
