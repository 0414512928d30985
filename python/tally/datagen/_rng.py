"""Counter-based randomness: every random number is a hash of (seed, stream, keys), never `rand()`.

`rand(seed)` depends on the partition a row lands in, so the same seed would give different rows under a
different partitioning. Here a value is a pure function of the seed, a named stream and the row's keys (its
`spark.range` id, a card key, a burst number, ...), so any partitioning, any executor count and any rerun
give the same rows. Spark's `xxhash64` is seeded by a constant and its math functions use `StrictMath`, so
the doubles are reproducible too.

Streams are named, not numbered: adding a new stream never shifts the values of existing ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from tally.datagen import _sql as S
from tally.datagen._sql import Expr

_TWO_53 = float(1 << 53)
_MASK_40 = (1 << 40) - 1


def _col(value) -> Expr:
    return value if isinstance(value, Expr) else S.lit(value)


class Rng:
    """Named random streams over column expressions (`_sql.Expr`), keyed by a seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def hash(self, stream: str, *keys) -> Expr:
        return S.xxhash64(S.lit(self.seed).cast("long"), S.lit(stream), *map(_col, keys))

    def uniform(self, stream: str, *keys) -> Expr:
        """Uniform on [0, 1): the top 53 bits of the hash, so every double is exactly representable."""
        return S.shiftrightunsigned(self.hash(stream, *keys), 11).cast("double") / S.lit(_TWO_53)

    def normal(self, stream: str, *keys) -> Expr:
        """Standard normal by Box-Muller on two sub-streams."""
        u1 = S.lit(1.0) - self.uniform(stream + ".r", *keys)  # in (0, 1]: log is finite
        u2 = self.uniform(stream + ".a", *keys)
        return S.sqrt(S.lit(-2.0) * S.log(u1)) * S.cos(S.lit(2 * math.pi) * u2)

    def index(self, stream: str, n, *keys) -> Expr:
        """Uniform integer in [0, n); `n` may be a column (always >= 1)."""
        return S.floor(self.uniform(stream, *keys) * _col(n)).cast("long")

    def choice(self, stream: str, weights: Sequence[float], *keys) -> Expr:
        """Index drawn with the given weights (inverse CDF, a balanced CASE tree: log2(len) comparisons)."""
        return inverse_cdf(self.uniform(stream, *keys), weights)


def zipf_rank(u: Expr, n: Expr, s: float) -> Expr:
    """Rank in [0, n), P(rank) ~ (rank + 1)^-s, from a uniform u: the bounded-Pareto inverse CDF, floored."""
    n = n.cast("double")
    a = 1.0 - s
    x = S.pow((S.pow(n, S.lit(a)) - S.lit(1.0)) * u + S.lit(1.0), S.lit(1.0 / a))
    return S.least(S.floor(x).cast("long") - S.lit(1), n.cast("long") - S.lit(1))


def inverse_cdf(u: Expr, weights: Sequence[float]) -> Expr:
    """The index i with cum[i-1] <= u < cum[i] (cumulative shares), as a balanced CASE tree."""
    total = float(sum(weights))
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc / total)

    def node(lo: int, hi: int) -> Expr:  # index in [lo, hi]
        if lo == hi:
            return S.lit(lo)
        mid = (lo + hi) // 2
        return S.when(u < S.lit(cum[mid]), node(lo, mid)).otherwise(node(mid + 1, hi))

    return node(0, len(weights) - 1)


def _constants(seed: int, salt: str, count: int) -> list[int]:
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return [int.from_bytes(digest[4 * i : 4 * i + 4], "little") for i in range(count)]


def scramble_id(key: Expr, seed: int, salt: str) -> Expr:
    """A bijection on [0, 2^40) keyed by (seed, salt), as 10 hex digits: unique ids that reveal no order.

    Three rounds of (odd multiply + add) mod 2^40 and an xor-shift; multipliers stay below 2^22 so the long
    arithmetic never overflows (Spark 4 runs in ANSI mode, where overflow is an error).
    """
    c = _constants(seed, salt, 6)
    x = key.cast("long")
    for r in range(3):
        mul = (c[2 * r] & ((1 << 22) - 1)) | 1
        add = (c[2 * r + 1] << 8) & _MASK_40
        x = (x * S.lit(mul) + S.lit(add)).bitwiseAND(S.lit(_MASK_40))
        x = x.bitwiseXOR(S.shiftright(x, 19 - 4 * r))
    return S.lpad(S.lower(S.hex(x)), 10, "0")


def seeded_constants(seed: int, salt: str, count: int) -> list[float]:
    """Uniform [0, 1) numbers for small driver-side choices (e.g. which merchants are compromised)."""
    out = []
    for i in range((count + 7) // 8):
        out.extend(v / 2**32 for v in _constants(seed, f"{salt}:{i}", 8))
    return out[:count]
