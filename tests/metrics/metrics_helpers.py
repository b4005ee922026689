"""Shared by the metrics tests: a synthetic scorer with a known answer.

The image is 64x64 with two bright squares. Token "cat" scores the mean brightness of the
square CAT (rows/cols 8:24), token "dog" the mean brightness of the square DOG (rows/cols
40:56); nothing else matters. So the true attribution of "cat" lies inside CAT only.
"""

import numpy as np

from capshap import Explanation, FunctionScorer, explain_image

CAT = (8, 24)  # rows and cols [8, 24)
DOG = (40, 56)
CAT_BOX = [8, 8, 24, 24]  # x0, y0, x1, y1
DOG_BOX = [40, 40, 56, 56]


def image():
    rng = np.random.default_rng(0)
    img = rng.integers(30, 110, size=(64, 64, 3), dtype=np.uint8)
    img[CAT[0] : CAT[1], CAT[0] : CAT[1]] = 230
    img[DOG[0] : DOG[1], DOG[0] : DOG[1]] = 190
    return img


class Counting:
    """The square-brightness scorer, counting calls and images."""

    def __init__(self):
        self.calls = 0
        self.images = 0

    def __call__(self, batch):
        self.calls += 1
        self.images += len(batch)
        b = batch.astype(np.float64) / 255.0
        k = 64 // batch.shape[1]  # the squares scale with the image (64 px or 32 px)
        a, z = CAT[0] // k, CAT[1] // k
        c, d = DOG[0] // k, DOG[1] // k
        return np.stack([b[:, a:z, a:z].mean((1, 2, 3)), b[:, c:d, c:d].mean((1, 2, 3))], axis=1)


def scorer(counter=None):
    return FunctionScorer(counter or Counting(), ["cat", "dog"], caption="cat dog")


def custom_exp(values, tokens):
    img = image()
    return Explanation(
        values=values.astype(np.float32),
        base_values=np.zeros(len(tokens)),
        outputs=np.zeros(len(tokens)),
        tokens=tokens,
        caption=" ".join(tokens),
        image=img,
        params={"mask": 0},
        name="custom",
    )


def make_exp():
    # fixed_context=0 reaches the 16x16 squares within 100 evaluations (exact Owen values,
    # fixed_context=None, stop at the 32x32 quadrants at this budget)
    return explain_image(
        image(), scorer(), mask=0, max_evals=100, batch_size=50, fixed_context=0, tree="axis", name="pets.jpg"
    )
