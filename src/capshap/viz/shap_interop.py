"""``Explanation.to_shap()``: a ``shap.Explanation`` that shap's image plots draw correctly.

Two things shap needs that a plain conversion gets wrong:

- ``data`` must be in a range ``matplotlib.imshow`` shows: shap's ``image_plot`` /
  ``shap.plots.image`` pass it to ``imshow`` unchanged, which clips floats to [0, 1], so a
  float copy of 0-255 pixels comes out white (shap #703, #3375). The image is given as
  float64 in [0, 1].
- Indexing by output name with an ellipsis (``s[..., "bird"]``) fails inside shap 0.51
  (its ``__getitem__`` writes the resolved index back at a position counted past the
  ellipsis). The returned object is a small subclass that spells the ellipsis out as
  slices first; full indexing (``s[:, :, :, :, "bird"]``) works on plain shap too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from capshap import Explanation

__all__ = ["to_shap"]


@lru_cache(maxsize=1)
def _explanation_class() -> type:
    import shap

    class CapshapShapExplanation(shap.Explanation):  # type: ignore[misc, valid-type]
        """shap.Explanation whose ``[..., name]`` indexing works (see the module docstring)."""

        def __getitem__(self, item: Any) -> Any:
            items = item if isinstance(item, tuple) else (item,)
            at = [i for i, t in enumerate(items) if t is Ellipsis]
            if len(at) == 1:
                k = at[0]
                fill = len(self.shape) - (len(items) - 1)
                if fill < 0:
                    raise IndexError(f"too many indices ({len(items) - 1}) for an explanation of shape {self.shape}")
                items = items[:k] + (slice(None),) * fill + items[k + 1 :]
                item = items
            return super().__getitem__(item)

    return CapshapShapExplanation


def to_shap(exp: "Explanation") -> Any:
    """``exp`` as a ``shap.Explanation`` (needs shap).

    values: (1, H, W, 3, T) float64; in pixel mode each pixel's value is split evenly over
    its three channels, so sums are kept. base_values: (1, T). data: (1, H, W, 3) float64
    in [0, 1] (the image / 255). output_names: the T tokens, so ``s[0, ..., "bird"]`` and
    ``shap.image_plot(s)`` label and pick tokens by name.
    """
    try:
        import shap  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("to_shap() needs shap: pip install shap") from e
    v = np.asarray(exp.values, dtype=np.float64)
    if v.ndim == 3:
        v = np.repeat(v[:, :, None, :] / 3.0, 3, axis=2)
    img = np.asarray(exp.image)
    if img.dtype == np.uint8:
        data = img.astype(np.float64) / 255.0
    else:
        from capshap.viz.plots import _display_image

        data = _display_image(img)
    cls = _explanation_class()
    return cls(
        values=v[None],
        base_values=np.asarray(exp.base_values, dtype=np.float64)[None],
        data=data[None],
        output_names=[str(t) for t in exp.tokens],
    )
