"""One intra-op thread for every distillation test: the subprocess runs (SIGKILL resume, torchrun) use one too,
so in-process reference runs take the same kernels and match them bit for bit; it is also much faster on a
shared, oversubscribed CPU."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
