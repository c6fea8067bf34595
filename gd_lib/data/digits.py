"""scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), offline, as train/val tensors.

The data is the file ``sklearn/datasets/data/digits.csv.gz`` that ships inside
scikit-learn (what ``sklearn.datasets.load_digits`` reads): nothing is
downloaded. It is read directly with numpy, which avoids importing
scikit-learn (seconds on a small machine); where the file is not found,
``sklearn.datasets.load_digits`` is called instead. The tests check that both
give the same arrays.

The split is stratified: within each class a permutation fixed by ``seed``
puts ``round(val_fraction · n_class)`` images in validation. Pixels (0..16) are
standardized per pixel with the training split's mean and standard deviation
(pixels constant on the training split, such as some corners, are only centred).

Reference: E. Alpaydin, C. Kaynak. Optical recognition of handwritten digits. UCI ML repository, 1998.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import torch

from gd_lib._checks import check_int, check_number

from .split import Split


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: the 1,797 × 64 pixel values (float64, 0..16) and the labels (int64)."""
    spec = importlib.util.find_spec("sklearn")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "digits.csv.gz")
    if path is not None and os.path.exists(path):
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",")
        X, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:  # pragma: no cover - depends on scikit-learn's layout
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        X, y = bunch.data.astype(np.float64), bunch.target.astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_digits(val_fraction: float = 0.2, *, images: bool = False, seed: int = 0, dtype=torch.float32) -> Split:
    """The digits as a :class:`Split`: ``X`` of shape ``(N, 64)`` (or ``(N, 1, 8, 8)`` with
    ``images=True``), ``y`` int64 labels 0..9.

    ``info``: ``mean`` and ``std`` (the per-pixel training statistics, shape 64),
    ``num_classes`` (10), ``image_shape`` ((1, 8, 8)).
    """
    check_number("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_int("seed", seed, 0)
    X, y = digits_arrays()
    # stratified split: a seeded permutation within each class
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for label in range(10):
        members = np.flatnonzero(y == label)
        members = members[torch.randperm(len(members), generator=gen).numpy()]
        n_val = int(round(val_fraction * len(members)))
        val_idx.append(members[:n_val])
        train_idx.append(members[n_val:])
    train_idx, val_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
    X_tr, X_va = X[train_idx], X[val_idx]
    # standardize with the training split's statistics
    mean, std = X_tr.mean(0), X_tr.std(0)
    std[std < 1e-8] = 1.0
    X_tr, X_va = (X_tr - mean) / std, (X_va - mean) / std
    shape = (-1, 1, 8, 8) if images else (-1, 64)

    def tensor(a):
        return torch.as_tensor(a, dtype=dtype).reshape(shape)

    return Split(
        tensor(X_tr),
        torch.as_tensor(y[train_idx]),
        tensor(X_va),
        torch.as_tensor(y[val_idx]),
        {
            "mean": torch.as_tensor(mean, dtype=dtype),
            "std": torch.as_tensor(std, dtype=dtype),
            "num_classes": 10,
            "image_shape": (1, 8, 8),
        },
    )
