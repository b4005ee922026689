"""GIT captioners (microsoft/git-base-coco, ...): image tokens, then [CLS] + prompt + answer."""

from __future__ import annotations

from capshap.captioners.hf.families.base import register
from capshap.captioners.hf.families.prefix import PrefixAdapter

__all__ = ["GitAdapter"]


@register("git")
class GitAdapter(PrefixAdapter):
    """A causal decoder over image tokens and text; starts at bos ([CLS])."""

    name = "git"
