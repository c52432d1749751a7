import pytest
from serve_helpers import world


@pytest.fixture(scope="module")
def reference():
    """A second, independent copy of the world for offline answers (the server owns the first)."""
    return world()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run many small ops: one intra-op thread is faster (and the CI machine is shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
