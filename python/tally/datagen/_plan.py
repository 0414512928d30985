"""How big everything is: the sizes and time span derived from (charges, days, seed, start).

Sizes are computed on the driver from the arguments alone (no Spark job), so they are identical on every run.
The charge id space [0, charges) is cut into three contiguous segments; a row's kind is a function of its id:

    [0, ordinary)                      ordinary charges (and nothing else)
    [ordinary, ordinary + testing)     card-testing bursts, BURST_LEN consecutive ids per burst
    [.., + spree)                      stolen-card sprees, SPREE_LEN consecutive ids per spree: the first is
                                       the card's (legitimate) visit where it was stolen, the rest are fraud
    [.., charges)                      quiet fraud, one id per charge (only with `structure`; empty otherwise,
                                       so the default rows are exactly those generated before it existed)

`structure` (`STRUCTURES`): False, the original generator; True, latent merchant communities plus quiet fraud at
merchants outside the card's communities; "control", the same fraud mix and rates as True (quiet fraud, sprees
at merchants of ordinary popularity) with the communities removed: what an embedding finds in True but not in
"control" can only come from the communities.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

from tally.datagen import _catalog as cat
from tally.datagen._rng import seeded_constants
from tally.errors import UsageError

BURST_LEN = 12  # charges per card-testing burst
SPREE_LEN = 8  # 1 compromise visit + 7 fraudulent charges
CARD_TESTING_SHARE = 0.005  # of all charges
SPREE_SHARE = 0.01  # of all charges
COMPROMISED_SPREE_SHARE = 0.7  # sprees whose card was stolen at a compromised merchant
QUIET_SHARE = 0.01  # of all charges, with `structure` only: single fraudulent charges that look ordinary
STRUCTURES = (False, True, "control")
MICROS_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Plan:
    charges: int
    days: int
    seed: int
    start: str
    partitions: int
    start_micros: int
    customers: int
    merchants_by_country: tuple[int, ...]
    testing_rows: int
    spree_rows: int
    compromised: tuple[tuple[int, int], ...]  # (merchant index, breach start micros after `start`)
    breach_micros: int
    structure: bool = False  # the structured generator's fraud mix (quiet fraud; sprees at zipf merchants)
    communities: bool = False  # latent merchant communities (`_charges.community_merchant`); False in "control"
    quiet_rows: int = 0

    @property
    def spree_end(self) -> int:
        return self.charges - self.quiet_rows

    @property
    def span_micros(self) -> int:
        return self.days * MICROS_PER_DAY

    @property
    def merchants(self) -> int:
        return sum(self.merchants_by_country)

    @property
    def ordinary_rows(self) -> int:
        return self.charges - self.testing_rows - self.spree_rows - self.quiet_rows

    def merchant_offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for n in self.merchants_by_country:
            out.append(acc)
            acc += n
        return tuple(out)


def make_plan(charges: int, days: int, seed: int, start: str, partitions: int | None,
              structure: bool | str = False) -> Plan:
    if not any(structure is s or (isinstance(s, str) and structure == s) for s in STRUCTURES):
        raise UsageError(f"datagen: structure must be one of False, True, 'control', got {structure!r}")
    if not isinstance(charges, int) or charges < 1:
        raise UsageError(
            f"datagen: charges must be a positive integer, got {charges!r}", hint="e.g. charges=200_000"
        )
    if not isinstance(days, int) or days < 1:
        raise UsageError(f"datagen: days must be a positive integer, got {days!r}", hint="e.g. days=30")
    if charges >= 1 << 40:
        raise UsageError(f"datagen: at most 2^40 charges, got {charges}")
    try:
        day0 = date.fromisoformat(start)
    except (TypeError, ValueError):
        raise UsageError(f"datagen: start must be an ISO date like 2026-01-01, got {start!r}") from None
    start_micros = int(datetime(day0.year, day0.month, day0.day, tzinfo=timezone.utc).timestamp()) * 1_000_000

    # About one charge per customer every 2.5 days; about 100 charges per merchant, capped so the merchant
    # dimension stays small enough to broadcast.
    customers = max(50, round(charges / (0.4 * days)))
    merchants = min(200_000, max(200, charges // 100))
    by_country = tuple(max(5, round(merchants * c.weight)) for c in cat.COUNTRIES)

    testing = (int(charges * CARD_TESTING_SHARE) // BURST_LEN) * BURST_LEN
    spree = (int(charges * SPREE_SHARE) // SPREE_LEN) * SPREE_LEN
    quiet = int(charges * QUIET_SHARE) if structure else 0

    # Compromised merchants: a few per thousand, never the biggest ones (a breach there would dominate);
    # each is breached during one window in the first 60 % of the span, so that sprees (up to 20 % of the
    # span later, see `_charges.stolen_card_spree`) still fall inside it.
    n_merchants = sum(by_country)
    n_compromised = max(2, n_merchants // 250)
    picks = seeded_constants(seed, "compromised", 2 * n_compromised)
    span = days * MICROS_PER_DAY
    offsets = [sum(by_country[:i]) for i in range(len(by_country))]

    def not_a_top_merchant(m: int) -> int:
        rank = m - max(o for o in offsets if o <= m)
        return m + 3 if rank < 3 else m

    compromised = tuple(
        (not_a_top_merchant(int(picks[2 * j] * (n_merchants - 4))), int(picks[2 * j + 1] * 0.4 * span))
        for j in range(n_compromised)
    )
    return Plan(
        charges=charges,
        days=days,
        seed=int(seed),
        start=start,
        partitions=int(partitions or max(2, -(-charges // 1_000_000))),
        start_micros=start_micros,
        customers=customers,
        merchants_by_country=by_country,
        testing_rows=testing,
        spree_rows=spree,
        compromised=compromised,
        breach_micros=min(10 * MICROS_PER_DAY, span // 5),
        structure=bool(structure),
        communities=structure is True,
        quiet_rows=quiet,
    )
