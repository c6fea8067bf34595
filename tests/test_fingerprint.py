"""Fingerprints of code (autograder/fingerprint.py): winnowing against the paper's definition,
its guarantee, and normalization that renaming, reformatting and comments do not change."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autograder.fingerprint import Fingerprints, kgram_hashes, matching_blocks, normalize, winnow


def naive_winnow(hashes: list[int], window: int) -> list[tuple[int, int]]:
    """Robust winnowing as Schleimer, Wilkerson & Aiken (2003) define it, window by window:
    keep the minimum; on a tie the hash the previous window kept if it is still inside,
    otherwise the rightmost minimum; record each newly kept position once."""
    if not hashes:
        return []
    windows = [hashes] if len(hashes) <= window else [hashes[s : s + window] for s in range(len(hashes) - window + 1)]
    kept, last = [], -1
    for start, values in enumerate(windows):
        smallest = min(values)
        positions = [start + i for i, h in enumerate(values) if h == smallest]
        best = last if last in positions else positions[-1]
        if best != last:
            kept.append((smallest, best))
            last = best
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=60), st.integers(1, 8))
def test_winnow_matches_the_papers_definition(hashes, window):
    # small hash values: ties (the robust rule's case) are frequent
    assert winnow(hashes, window) == naive_winnow(hashes, window)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(list("abcdefgh")), min_size=0, max_size=40),
    st.lists(st.sampled_from(list("abcdefgh")), min_size=0, max_size=40),
    st.lists(st.sampled_from(list("abcdefgh")), min_size=20, max_size=40),
    st.integers(2, 6),
    st.integers(1, 6),
)
def test_a_shared_run_of_k_plus_window_minus_one_tokens_shares_a_fingerprint(prefix_a, prefix_b, run, k, window):
    """The paper's guarantee: a common substring of at least window + k - 1 tokens is found."""
    run = run[: window + k - 1] if len(run) >= window + k - 1 else run
    a_tokens, b_tokens = prefix_a + run, prefix_b + run + prefix_a
    a = {h for h, _ in winnow(kgram_hashes(a_tokens, k), window)}
    b = {h for h, _ in winnow(kgram_hashes(b_tokens, k), window)}
    assert a & b


def test_kgram_hashes_are_equal_exactly_for_equal_kgrams():
    tokens = ["V", "=", "V", "+", "N", ";", "V", "=", "V", "+", "N", ";", "return", "V"]
    hashes = kgram_hashes(tokens, 4)
    assert len(hashes) == len(tokens) - 4 + 1
    for i in range(len(hashes)):
        for j in range(len(hashes)):
            assert (hashes[i] == hashes[j]) == (tokens[i : i + 4] == tokens[j : j + 4])
    assert kgram_hashes(tokens[:3], 4) == []


ORIGINAL = """
def adam_step(param, grad, m, v, t, *, lr, betas=(0.9, 0.999), eps=1e-8):
    beta1, beta2 = betas
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return param - lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps), m, v
"""

DISGUISED = '''
def adam_step(p, g, first, second, step, *, lr, betas=(0.9, 0.999), eps=1e-8):
    """Adam, my way."""
    # unpack
    b_1, b_2 = betas   # decay rates
    first = b_1*first + (1-b_1)*g
    second = b_2*second + (1 - b_2)*g*g  ;  "a bare string is no code"
    return p - lr*(first/(1 - b_1**step))/((second/(1 -
              b_2**step)).sqrt() + eps), first, second
'''


def test_renaming_reformatting_comments_and_docstrings_leave_the_tokens_unchanged():
    assert normalize(ORIGINAL).tokens == normalize(DISGUISED).tokens


def test_attributes_keyword_arguments_and_different_code_do_change_the_tokens():
    base = normalize("x = torch.zeros_like(p, memory_format=fmt)").tokens
    assert base == ["V", "=", "torch", ".", "zeros_like", "(", "V", ",", "memory_format", "=", "V", ")", ";"]
    assert normalize("y = torch.ones_like(q, memory_format=f)").tokens != base  # another API call
    assert normalize("x = a + b").tokens != normalize("x = a * b").tokens


def test_tokens_keep_their_lines_and_broken_code_keeps_what_precedes_the_error():
    code = normalize("a = 1\n\n# note\nb = (2 +\n     3)\n")
    assert code.tokens == ["V", "=", "N", ";", "V", "=", "(", "N", "+", "N", ")", ";"]
    assert code.first_lines == [1, 1, 1, 1, 4, 4, 4, 4, 4, 5, 5, 5]
    broken = normalize("a = 1\nb = (2 +\n")
    assert not broken.complete and broken.tokens[:4] == ["V", "=", "N", ";"]
    assert normalize("%timeit f(x)\n!ls\nx = 1").tokens == ["V", "=", "N", ";"]


def test_matching_blocks_pair_the_copied_runs():
    a = Fingerprints.of(normalize(ORIGINAL), 6, 2)
    b = Fingerprints.of(normalize("z = 7\n" + DISGUISED), 6, 2)
    shared = a.kept.keys() & b.kept.keys()
    blocks = matching_blocks(a, b, shared, gap=2)
    assert len(blocks) == 1
    a0, a1, b0, b1 = blocks[0]
    assert b0 - a0 == 4  # DISGUISED starts 4 tokens later ("z = 7 ;")
    assert a1 - a0 == b1 - b0 and a1 - a0 >= len(a.code.tokens) - 10
