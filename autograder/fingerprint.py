"""Fingerprints of Python code that survive renaming and reformatting (MOSS-style winnowing).

The method is that of MOSS (Schleimer, Wilkerson & Aiken 2003, "Winnowing: local
algorithms for document fingerprinting", SIGMOD):

1. **Normalize.** Python's own tokenizer splits the code into tokens; comments,
   blank lines, indentation tokens and docstrings (any string that is a statement
   by itself) are dropped; every identifier becomes ``V`` except keywords,
   builtins, a few module names everyone imports (``torch``, ``math``, ...),
   attribute names (``x.addcmul_``: the API a copy must keep) and keyword-argument
   names in calls (``value=``); numbers become ``N``, strings ``S``; a statement
   boundary (newline or ``;``) is ``;``. Renaming variables, reformatting,
   re-wrapping lines and adding comments leave the token sequence unchanged.
2. **Hash every k-gram** of normalized tokens (``k`` consecutive tokens).
3. **Winnow**: in every window of ``window`` consecutive k-gram hashes keep the
   minimum (robust winnowing: on a tie, the hash the previous window kept if it
   is still in the window, else the rightmost). Two documents sharing a run of at
   least ``k + window - 1`` tokens share at least one kept hash (the paper's
   guarantee); runs shorter than ``k`` tokens are never matched (noise).

The kept hashes with their token positions are a document's fingerprints; each
token remembers its line in the original source, so a match maps back to lines.
"""

from __future__ import annotations

import builtins
import io
import keyword
import tokenize
import zlib
from dataclasses import dataclass, field

import numpy as np

# Names a renaming cannot touch without breaking the code (so keeping them is informative).
KEPT_NAMES = frozenset(dir(builtins)) | {"torch", "math", "np", "numpy", "nn", "F", "self", "cls"}

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


@dataclass
class NormalizedCode:
    """A source's normalized tokens, each with the (1-based) lines of the source it spans."""

    source: str
    tokens: list[str] = field(default_factory=list)
    first_lines: list[int] = field(default_factory=list)
    last_lines: list[int] = field(default_factory=list)
    complete: bool = True  # False when the tokenizer stopped early (a syntax error): tokens up to it

    def __len__(self) -> int:
        return len(self.tokens)


def _without_magics(source: str) -> str:
    """IPython lines (``%magic``, ``!shell``, ``name?``) blanked, so that line numbers stay."""
    lines = source.split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("%", "!")) or (stripped.endswith("?") and not stripped.startswith("#")):
            lines[i] = ""
    return "\n".join(lines)


def _raw_tokens(source: str) -> tuple[list[tokenize.TokenInfo], bool]:
    tokens, complete = [], True
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIPPED or (tok.type == tokenize.ERRORTOKEN and not tok.string.strip()):
                continue
            tokens.append(tok)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        complete = False
    return tokens, complete


def _is_statement_end(tok: tokenize.TokenInfo) -> bool:
    return tok.type == tokenize.NEWLINE or (tok.type == tokenize.OP and tok.string == ";")


def normalize(source: str) -> NormalizedCode:
    """The normalized tokens of ``source`` (any text: what does not tokenize ends the tokens)."""
    raw, complete = _raw_tokens(_without_magics(source))
    out = NormalizedCode(source=source, complete=complete)
    depth = 0
    i = 0
    while i < len(raw):
        tok = raw[i]
        at_statement_start = i == 0 or _is_statement_end(raw[i - 1])
        if tok.type == tokenize.STRING and at_statement_start:
            j = i
            while j < len(raw) and raw[j].type == tokenize.STRING:
                j += 1
            if j == len(raw) or _is_statement_end(raw[j]):
                i = j + 1  # a docstring or a bare string: no code
                continue
        if _is_statement_end(tok):
            text = ";"
            if not out.tokens or out.tokens[-1] == ";":
                i += 1
                continue
        elif tok.type == tokenize.NAME:
            previous = raw[i - 1] if i > 0 else None
            following = raw[i + 1] if i + 1 < len(raw) else None
            if keyword.iskeyword(tok.string) or tok.string in KEPT_NAMES:
                text = tok.string
            elif previous is not None and previous.type == tokenize.OP and previous.string == ".":
                text = tok.string  # attribute: x.addcmul_
            elif depth > 0 and following is not None and following.type == tokenize.OP and following.string == "=":
                text = tok.string  # keyword argument: value=
            else:
                text = "V"
        elif tok.type == tokenize.NUMBER:
            text = "N"
        elif tok.type == tokenize.STRING:
            if out.tokens and out.tokens[-1] == "S" and raw[i - 1].type == tokenize.STRING:
                out.last_lines[-1] = tok.end[0]  # "a" "b" is one string
                i += 1
                continue
            text = "S"
        else:
            text = tok.string
            if tok.type == tokenize.OP and text in "([{":
                depth += 1
            elif tok.type == tokenize.OP and text in ")]}":
                depth = max(0, depth - 1)
        out.tokens.append(text)
        out.first_lines.append(tok.start[0])
        out.last_lines.append(tok.end[0])
        i += 1
    return out


_TOKEN_IDS: dict[str, int] = {}


def _token_id(text: str) -> int:
    # a stable number per token text (crc32, not hash(): str hashes change between processes)
    value = _TOKEN_IDS.get(text)
    if value is None:
        value = _TOKEN_IDS[text] = zlib.crc32(text.encode("utf-8"))
    return value


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base, 2^64 / golden ratio


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit (minima are then uniform)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def kgram_hashes(tokens: list[str], k: int) -> list[int]:
    """The hash of each k-gram: ``hashes[i]`` covers ``tokens[i:i + k]`` (empty if fewer than k).

    A polynomial in the tokens' crc32 numbers modulo 2^64, mixed: the same in every process
    (unlike ``hash()`` of a str), and computed for all k-grams at once.
    """
    if len(tokens) < k:
        return []
    ids = np.fromiter((_token_id(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    powers = np.ones(k, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic modulo 2^64 on purpose
        for j in range(k - 2, -1, -1):
            powers[j] = powers[j + 1] * _MULTIPLIER
        windows = np.lib.stride_tricks.sliding_window_view(ids, k)
        return _mix((windows * powers).sum(axis=1, dtype=np.uint64)).tolist()


def winnow(hashes: list[int], window: int) -> list[tuple[int, int]]:
    """Robust winnowing: the (hash, position) pairs kept, in order of position.

    Each window of ``window`` consecutive hashes keeps its minimum; on a tie the one the
    previous window kept, if it is still inside, else the rightmost. A document with fewer
    hashes than a window keeps its minimum.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = len(hashes)
    if n == 0:
        return []
    if n <= window:
        smallest = min(hashes)
        return [(smallest, max(i for i, h in enumerate(hashes) if h == smallest))]
    values = np.asarray(hashes, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(values, window)
    # rightmost minimum of each window: argmin (first minimum) of the window read backwards
    rightmost = (np.arange(n - window + 1) + (window - 1 - np.argmin(windows[:, ::-1], axis=1))).tolist()
    minima = windows.min(axis=1).tolist()
    kept: list[tuple[int, int]] = []
    last = -1
    for start, (best, smallest) in enumerate(zip(rightmost, minima)):
        if last >= start and hashes[last] == smallest:
            best = last
        if best != last:
            kept.append((hashes[best], best))
            last = best
    return kept


@dataclass
class Fingerprints:
    """A normalized source, the hash of each of its k-grams, and its winnowed fingerprints."""

    code: NormalizedCode
    k: int
    hashes: list[int]  # hash of the k-gram starting at each token
    kept: dict[int, list[int]]  # winnowed hash -> token positions where it starts

    @classmethod
    def of(
        cls,
        code: NormalizedCode,
        k: int,
        window: int,
        start: int = 0,
        stop: int | None = None,
        hashes: list[int] | None = None,
    ) -> Fingerprints:
        """Fingerprints of ``code`` (or of its k-grams ``start..stop``, given precomputed hashes)."""
        all_hashes = kgram_hashes(code.tokens, k) if hashes is None else hashes
        stop = len(all_hashes) if stop is None else stop
        kept: dict[int, list[int]] = {}
        for h, position in winnow(all_hashes[start:stop], window):
            kept.setdefault(h, []).append(position + start)
        return cls(code=code, k=k, hashes=all_hashes, kept=kept)

    def covered(self, positions, length: int | None = None) -> list[bool]:
        """Which tokens lie in a k-gram starting at one of ``positions``."""
        size = len(self.code.tokens) if length is None else length
        marks = [0] * (size + 1)
        for p in positions:
            marks[p] += 1
            marks[min(p + self.k, size)] -= 1
        out, running = [], 0
        for i in range(size):
            running += marks[i]
            out.append(running > 0)
        return out

    def covered_by_hashes(self, hash_set) -> list[bool]:
        """Which tokens lie in some k-gram (any, kept or not) whose hash is in ``hash_set``."""
        return self.covered([i for i, h in enumerate(self.hashes) if h in hash_set])


def matching_blocks(a: Fingerprints, b: Fingerprints, shared, gap: int) -> list[tuple[int, int, int, int]]:
    """Aligned token ranges ``(a_start, a_stop, b_start, b_stop)`` of the fingerprints in ``shared``.

    Each occurrence pair of a shared hash is a point on a diagonal ``a - b``; points of one
    diagonal at most ``gap`` tokens apart make one block (a run copied in one piece). Blocks
    overlapping a longer one on either side are dropped, so every line pairs with one other.
    """
    points = sorted((pa - pb, pa, pb) for h in shared for pa in a.kept.get(h, ()) for pb in b.kept.get(h, ()))
    blocks: list[list[int]] = []
    for diagonal, pa, pb in points:
        if blocks and blocks[-1][4] == diagonal and pa <= blocks[-1][1] + gap:
            blocks[-1][1] = max(blocks[-1][1], pa + a.k)
            blocks[-1][3] = max(blocks[-1][3], pb + b.k)
        else:
            blocks.append([pa, pa + a.k, pb, pb + b.k, diagonal])
    chosen: list[tuple[int, int, int, int]] = []
    for block in sorted(blocks, key=lambda x: x[1] - x[0], reverse=True):
        a0, a1, b0, b1, _ = block
        if all(a1 <= c[0] or a0 >= c[1] for c in chosen) and all(b1 <= c[2] or b0 >= c[3] for c in chosen):
            chosen.append((a0, a1, b0, b1))
    return sorted(chosen)
