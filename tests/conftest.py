"""Shared test settings."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tiny tensors of the unit tests run far faster on one thread than on cores shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
