import os
import sys

import pytest
import torch

# optim_registry is imported by name from the generic tests
sys.path.insert(0, os.path.dirname(__file__))

os.environ.setdefault("GD_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests run two workers on two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(int(os.environ.get("GD_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; run `make test-gpu` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
