import pytest
from metrics_helpers import make_exp


@pytest.fixture(scope="session")
def exp():
    """The explanation of the two-squares image (see metrics_helpers)."""
    return make_exp()
