"""A real text corpus that ships with Python: the standard library's own sources and docstrings.

The files are ``sorted(glob(<stdlib>/*.py))`` with ``<stdlib> =
sysconfig.get_paths()["stdlib"]`` (the top-level modules, ~170 files, ~4.7 M
characters on CPython 3.11): nothing is downloaded, and the corpus is fixed
for a given Python version (recorded in ``info``).

- ``source="docstrings"``: the text of every triple-quoted string (docstrings, mostly
  English prose, ~0.9 M characters); ``source="code"``: the whole files.
- ``level="word"``: lower-cased words ``[a-z]+``, numbers ``[0-9]+`` and single
  punctuation marks; ``level="char"``: characters.
- The vocabulary keeps the tokens seen at least ``min_count`` times, ordered by
  frequency (ties by the token), after ``<unk>`` = id 0 which stands for the rest.
- The token stream is split contiguously: the first ``1 − val_fraction`` for
  training, the rest for validation.

Word frequencies follow Zipf's law, ``count(rank r) ∝ r^{−α}`` with ``α ≈ 1``
(:meth:`TextCorpus.frequency_table` gives the table), which is what makes
language modelling a heavy-tailed, class-imbalanced problem.

Reference: G. K. Zipf. Human behavior and the principle of least effort. 1949.
"""

from __future__ import annotations

import functools
import glob
import os
import platform
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass, field

import torch

from gd_lib._checks import check_int, check_number

UNK = "<unk>"
_TRIPLE_QUOTED = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def stdlib_files() -> list[str]:
    """The corpus's files: the standard library's top-level ``.py`` files, sorted by name."""
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


@functools.lru_cache(maxsize=4)
def _read_text(source: str, max_files: int | None) -> tuple[str, tuple[str, ...]]:
    files = stdlib_files()[:max_files]
    parts = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        if source == "docstrings":
            parts.extend(match.group(2).strip() for match in _TRIPLE_QUOTED.finditer(text))
        else:
            parts.append(text)
    return "\n\n".join(parts), tuple(os.path.basename(f) for f in files)


def tokenize(text: str, level: str = "word") -> list[str]:
    """Word level: lower-cased ``[a-z]+`` / ``[0-9]+`` / one punctuation mark; char level: characters."""
    if level == "word":
        return _WORD.findall(text.lower())
    if level == "char":
        return list(text)
    raise ValueError(f"Invalid level: {level!r}; expected 'word' or 'char'")


@dataclass
class LMSampler:
    """``sampler(batch_size, generator) → (x, y)``: random windows of a token stream, ``y`` shifted by one.

    ``validation`` is a fixed set of non-overlapping windows of the validation
    stream, which :func:`gd_lib.train.train` evaluates on by default.
    """

    tokens: torch.Tensor
    context_length: int
    validation: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        return random_windows(self.tokens, batch_size, self.context_length, generator)


def random_windows(
    tokens: torch.Tensor, batch_size: int, context_length: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows ``x = t[s : s+T]``, ``y = t[s+1 : s+T+1]`` at uniform random starts ``s``."""
    check_int("batch_size", batch_size, 1)
    check_int("context_length", context_length, 1, tokens.numel() - 1)
    starts = torch.randint(0, tokens.numel() - context_length, (batch_size,), generator=generator)
    offsets = torch.arange(context_length)
    index = starts.unsqueeze(1) + offsets
    return tokens[index], tokens[index + 1]


def consecutive_windows(
    tokens: torch.Tensor, context_length: int, max_windows: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows covering the stream from its start (for a fixed evaluation set)."""
    check_int("context_length", context_length, 1, tokens.numel() - 1)
    n = (tokens.numel() - 1) // context_length
    if max_windows is not None:
        n = min(n, max_windows)
    x = tokens[: n * context_length].view(n, context_length)
    y = tokens[1 : n * context_length + 1].view(n, context_length)
    return x, y


@dataclass
class TextCorpus:
    """Token streams of the standard-library corpus with its vocabulary and frequency table."""

    level: str
    vocab: list[str]
    counts: torch.Tensor
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    type_counts: Counter
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.stoi = {token: i for i, token in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` (unknown tokens → 0)."""
        return torch.tensor([self.stoi.get(t, 0) for t in tokenize(text, self.level)], dtype=torch.long)

    def decode(self, ids) -> str:
        tokens = [self.vocab[int(i)] for i in ids]
        return (" " if self.level == "word" else "").join(tokens)

    def frequency_table(self) -> tuple[list[str], torch.Tensor]:
        """Every token type of the corpus (before the ``min_count`` cut) and its count, by rank."""
        ranked = sorted(self.type_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [t for t, _ in ranked], torch.tensor([c for _, c in ranked], dtype=torch.long)

    def get_batch(
        self, split: str, batch_size: int, context_length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows from ``split`` (``"train"`` or ``"val"``)."""
        return random_windows(self._tokens(split), batch_size, context_length, generator)

    def sampler(self, context_length: int, *, max_val_windows: int | None = 256) -> LMSampler:
        """An :class:`LMSampler` over the training tokens, validating on fixed validation windows."""
        return LMSampler(
            self.train_tokens, context_length, consecutive_windows(self.val_tokens, context_length, max_val_windows)
        )

    def _tokens(self, split: str) -> torch.Tensor:
        if split == "train":
            return self.train_tokens
        if split == "val":
            return self.val_tokens
        raise ValueError(f"Invalid split: {split!r}; expected 'train' or 'val'")


def stdlib_corpus(
    level: str = "word",
    *,
    source: str = "docstrings",
    min_count: int | None = None,
    val_fraction: float = 0.1,
    max_files: int | None = None,
) -> TextCorpus:
    """Build the corpus (see the module docstring).

    Args:
        level: ``"word"`` or ``"char"``.
        source: ``"docstrings"`` (the text of triple-quoted strings) or ``"code"`` (whole files).
        min_count: rarer tokens become ``<unk>`` (default 3 for words, 1 for characters).
        val_fraction: the fraction of the stream (at its end) used for validation.
        max_files: use only the first ``max_files`` files (a smaller, faster corpus).
    """
    if level not in ("word", "char"):
        raise ValueError(f"Invalid level: {level!r}; expected 'word' or 'char'")
    if source not in ("docstrings", "code"):
        raise ValueError(f"Invalid source: {source!r}; expected 'docstrings' or 'code'")
    if min_count is None:
        min_count = 3 if level == "word" else 1
    check_int("min_count", min_count, 1)
    check_number("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if max_files is not None:
        check_int("max_files", max_files, 1)

    text, files = _read_text(source, max_files)
    tokens = tokenize(text, level)
    type_counts = Counter(tokens)
    # vocabulary: <unk>, then the tokens seen >= min_count times, most frequent first
    kept = sorted((t for t, c in type_counts.items() if c >= min_count), key=lambda t: (-type_counts[t], t))
    vocab = [UNK] + kept
    stoi = {t: i for i, t in enumerate(vocab)}
    ids = torch.tensor([stoi.get(t, 0) for t in tokens], dtype=torch.long)
    counts = torch.bincount(ids, minlength=len(vocab))
    n_train = int(round((1.0 - val_fraction) * ids.numel()))
    info = {
        "files": files,
        "num_files": len(files),
        "num_tokens": ids.numel(),
        "source": source,
        "min_count": min_count,
        "python_version": platform.python_version(),
        "num_characters": len(text),
    }
    return TextCorpus(level, vocab, counts, ids[:n_train].clone(), ids[n_train:].clone(), type_counts, info)
