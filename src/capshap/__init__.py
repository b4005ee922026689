"""capshap: explain image captions word by word with Owen values over image regions.

The small public API::

    import capshap
    exps = capshap.explain("examples/")           # offline default captioner
    exps[0].plot(); exps[0].save("out/1")

Every part loads only when used (torch, transformers and scikit-image included).
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

# Everything loads on first use (PEP 562), so that ``import capshap`` (and ``capshap
# --help`` / ``capshap version``) costs nothing: numpy, OpenCV, Pillow and torch load with
# the first function that needs them.
_LAZY = {
    "owen_values": ".owen",
    "OwenResult": ".owen",
    "explain": ".run",
    "Run": ".run",
    "FolderOptions": ".run",
    "RUNNERS": ".runners",
    "Settings": ".settings",
    "CAPTIONERS": ".captioners",
    "SCORERS": ".scoring",
    "TREES": ".regions",
    "FILLS": ".masking",
    "explain_image": ".run",
    "make_tree": ".regions",
    "Explanation": ".explanation",
    "ImageError": ".images",
    "iter_images": ".images",
    "load_image": ".images",
    "Masker": ".masking",
    "Captioner": ".interfaces",
    "FunctionCaptioner": ".interfaces",
    "FunctionScorer": ".interfaces",
    "Scorer": ".interfaces",
    "as_captioner": ".interfaces",
    "OwnHeadFactory": ".scoring.own",
    "PresenceFactory": ".scoring.presence",
    "Tree": ".regions.tree",
    "axis_aligned": ".regions.axis",
    "HFCaptioner": ".captioners.hf",
    "ModelLoadError": ".captioners.hf",
    "SurrogateFactory": ".scoring.surrogate",
    "AzureCaptioner": ".captioners.azure",
    "OpenAICaptioner": ".captioners.openai",
    "AzureError": ".captioners.azure",
    "OpenAIError": ".captioners.openai",
    "CaptionCache": ".captioners.cache",
    "BuiltinCaptioner": ".captioners.builtin",
    "superpixel_tree": ".regions.segments",
    "from_labels": ".regions.segments",
    "from_masks": ".regions.segments",
    "plot": ".viz.plots",
    "plot_grid": ".viz.plots",
    "Thresholds": ".grounding",
    "report": ".viz.report",
    "deletion_insertion": ".metrics",
    "pointing_game": ".metrics",
    "evaluate_run": ".metrics",
    "scale_boxes": ".metrics",
    "load_boxes": ".metrics",
}

__all__ = ["__version__", *_LAZY]


#: Old names kept working for one release (0.3), with a DeprecationWarning: name -> (module, new name).
_DEPRECATED = {
    "make_scorer": (".run", "make_scorer", "capshap.scoring.bind_scorer(scorer, captioner, caption)"),
    "segments": (".regions.segments", "superpixel_tree", "capshap.superpixel_tree"),
    "OwnHead": (".scoring.own", "OwnHeadFactory", "capshap.OwnHeadFactory (it makes scorers)"),
    "PresenceScorer": (".scoring.presence", "PresenceFactory", "capshap.PresenceFactory (it makes scorers)"),
    "SurrogateScorer": (".scoring.surrogate", "SurrogateFactory", "capshap.SurrogateFactory (it makes scorers)"),
}


def __getattr__(name: str) -> Any:
    if name == "owen":  # the module, callable with a DeprecationWarning as 0.2's function was
        return import_module(".owen", __name__)
    if name in _DEPRECATED:
        import warnings

        module, attr, instead = _DEPRECATED[name]
        warnings.warn(f"capshap.{name} is deprecated and goes in 0.4; use {instead}", DeprecationWarning,
                      stacklevel=2)
        return getattr(import_module(module, __name__), attr)
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'capshap' has no attribute {name!r}")
