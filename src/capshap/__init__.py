"""capshap: explain image captions word by word with Owen values over image regions.

The small public API::

    import capshap
    exps = capshap.explain("examples/")           # offline default captioner
    exps[0].plot(); exps[0].save("out/1")

Heavy parts (torch, transformers, scikit-image) load only when used.
"""

from importlib import import_module
from typing import Any

from capshap.run import explain, explain_image, make_scorer, make_tree
from capshap.explanation import Explanation
from capshap.images import ImageError, iter_images, load_image
from capshap.masking import Masker
from capshap.interfaces import Captioner, FunctionCaptioner, FunctionScorer, Scorer, as_captioner
from capshap.scoring.own import OwnHead
from capshap.scoring.presence import PresenceScorer
from capshap.owen import OwenResult, owen
from capshap.regions.tree import Tree, axis_aligned

__version__ = "0.1.0"

_LAZY = {
    "HFCaptioner": ".captioners.hf",
    "ModelLoadError": ".captioners.hf",
    "SurrogateScorer": ".scoring.surrogate",
    "AzureCaptioner": ".captioners.azure",
    "AzureError": ".captioners.azure",
    "CaptionCache": ".captioners.cache",
    "BuiltinCaptioner": ".captioners.builtin",
    "segments": ".regions.segments",
    "from_labels": ".regions.segments",
    "from_masks": ".regions.segments",
    "plot_grid": ".viz.plots",
    "report": ".viz.report",
    "deletion_insertion": ".metrics",
    "pointing_game": ".metrics",
    "evaluate_run": ".metrics",
    "scale_boxes": ".metrics",
    "load_boxes": ".metrics",
}

__all__ = [
    "explain",
    "explain_image",
    "make_scorer",
    "make_tree",
    "Explanation",
    "ImageError",
    "iter_images",
    "load_image",
    "Masker",
    "Captioner",
    "FunctionCaptioner",
    "FunctionScorer",
    "OwnHead",
    "PresenceScorer",
    "Scorer",
    "as_captioner",
    "OwenResult",
    "owen",
    "Tree",
    "axis_aligned",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'capshap' has no attribute {name!r}")
