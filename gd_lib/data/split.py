"""The container every supervised data set of :mod:`gd_lib.data` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    """Train and validation tensors of a supervised data set, plus what built them.

    ``X_train[i]`` has label/target ``y_train[i]``; likewise for validation.
    ``info`` holds the data set's known quantities (class probabilities, the
    true weights, the vocabulary size, ...). :func:`gd_lib.train.train` trains on
    ``(X_train, y_train)`` and by default evaluates on :attr:`validation`.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train

    @property
    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_val, self.y_val

    def to(self, device) -> Split:
        return Split(
            self.X_train.to(device), self.y_train.to(device), self.X_val.to(device), self.y_val.to(device), self.info
        )

    def __repr__(self) -> str:
        return (
            f"Split(X_train={tuple(self.X_train.shape)}, y_train={tuple(self.y_train.shape)}, "
            f"X_val={tuple(self.X_val.shape)}, y_val={tuple(self.y_val.shape)}, "
            f"info keys={sorted(self.info)})"
        )


def random_split(
    X: torch.Tensor, y: torch.Tensor, val_fraction: float, generator: torch.Generator, info: dict | None = None
) -> Split:
    """Shuffle with ``generator`` and put the last ``round(val_fraction · N)`` rows in validation."""
    n = X.shape[0]
    n_val = int(round(val_fraction * n))
    perm = torch.randperm(n, generator=generator)
    train_idx, val_idx = perm[: n - n_val], perm[n - n_val :]
    return Split(X[train_idx], y[train_idx], X[val_idx], y[val_idx], info or {})
