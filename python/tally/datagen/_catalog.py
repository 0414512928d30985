"""Reference data the generator draws from: countries, issuers and BINs, merchant categories, decline codes.

The issuers and BINs are fictional (plausible prefixes per brand, not a real BIN table). The numbers are
chosen to give the rates documented in docs/datagen.md; change them here, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Country:
    code: str  # ISO-3166 alpha-2
    weight: float  # share of customers (and of merchants)
    currency: str  # ISO-4217
    per_usd: float  # units of the currency per US dollar
    exponent: int  # minor units per unit = 10^exponent (JPY has none)
    utc_offset_h: float  # a single offset per country: enough for a diurnal cycle in local time


COUNTRIES: tuple[Country, ...] = (
    Country("US", 0.40, "USD", 1.0, 2, -5),
    Country("GB", 0.12, "GBP", 0.79, 2, 0),
    Country("DE", 0.10, "EUR", 0.92, 2, 1),
    Country("FR", 0.08, "EUR", 0.92, 2, 1),
    Country("CA", 0.06, "CAD", 1.36, 2, -5),
    Country("BR", 0.07, "BRL", 5.0, 2, -3),
    Country("IN", 0.06, "INR", 83.0, 2, 5.5),
    Country("JP", 0.04, "JPY", 150.0, 0, 9),
    Country("AU", 0.04, "AUD", 1.52, 2, 10),
    Country("MX", 0.03, "MXN", 17.0, 2, -6),
)


@dataclass(frozen=True)
class Issuer:
    """An issuing bank: its BIN ranges and how it decides.

    Decline probability of an ordinary charge is sigmoid(base + cross_border * [foreign merchant] +
    amount * ln(usd / 50) + ecommerce * [ecommerce]): issuers differ in all four, which is what makes
    authorization rates an issuer-by-country-by-amount problem.
    """

    name: str
    country: str
    brand: str
    bins: tuple[str, ...]
    base: float
    cross_border: float
    amount: float
    ecommerce: float


ISSUERS: tuple[Issuer, ...] = (
    Issuer("Harbor National Bank", "US", "visa", ("414720", "426684"), -3.1, 0.9, 0.25, 0.3),
    Issuer("Liberty Card Services", "US", "mastercard", ("517805", "542418"), -2.8, 1.2, 0.30, 0.4),
    Issuer("Pioneer Federal Credit Union", "US", "visa", ("440066",), -2.4, 1.6, 0.45, 0.5),
    Issuer("Summit Charge", "US", "amex", ("371449", "378282"), -3.3, 0.6, 0.15, 0.2),
    Issuer("Cascade Savings", "US", "discover", ("601100",), -2.6, 1.4, 0.35, 0.4),
    Issuer("Thames & Mercer", "GB", "visa", ("454313", "465858"), -3.0, 0.8, 0.25, 0.3),
    Issuer("Northgate Bank", "GB", "mastercard", ("535522",), -2.7, 1.0, 0.30, 0.5),
    Issuer("Rheinland Sparbank", "DE", "mastercard", ("522371", "529939"), -2.9, 0.9, 0.30, 0.4),
    Issuer("Hansa Direkt", "DE", "visa", ("492181",), -2.5, 1.3, 0.40, 0.2),
    Issuer("Banque du Midi", "FR", "visa", ("497010", "497355"), -2.9, 1.0, 0.25, 0.6),
    Issuer("Credit Lumiere", "FR", "mastercard", ("513691",), -2.7, 1.1, 0.30, 0.5),
    Issuer("Maple Trust", "CA", "visa", ("450644", "451015"), -3.0, 0.7, 0.25, 0.3),
    Issuer("Laurentian Card", "CA", "mastercard", ("520082",), -2.6, 1.0, 0.35, 0.4),
    Issuer("Banco Atlantico", "BR", "mastercard", ("516292", "523421"), -2.1, 1.5, 0.45, 0.6),
    Issuer("Paulista Digital", "BR", "visa", ("498453",), -1.8, 1.8, 0.50, 0.3),
    Issuer("Deccan Bank", "IN", "visa", ("421323", "438628"), -2.0, 1.9, 0.40, 0.7),
    Issuer("Indus Card", "IN", "mastercard", ("512622",), -1.7, 2.1, 0.50, 0.6),
    Issuer("Sakura Trust", "JP", "jcb", ("353011", "356999"), -3.2, 0.7, 0.20, 0.2),
    Issuer("Kansai Card", "JP", "visa", ("437736",), -2.9, 0.9, 0.25, 0.3),
    Issuer("Southern Cross Bank", "AU", "visa", ("456469", "462263"), -3.0, 0.8, 0.25, 0.3),
    Issuer("Outback Mutual", "AU", "mastercard", ("521729",), -2.6, 1.2, 0.35, 0.4),
    Issuer("Banco del Valle", "MX", "visa", ("415231", "477213"), -2.0, 1.6, 0.45, 0.6),
    Issuer("Azteca Credito", "MX", "mastercard", ("547156",), -1.9, 1.7, 0.50, 0.5),
)


@dataclass(frozen=True)
class Category:
    """A merchant category: its code, its share of online volume, and its ticket size (lognormal, USD)."""

    mcc: str
    name: str
    weight: float  # share of merchants
    ecommerce: float  # share of its charges that are card-not-present
    median_usd: float
    sigma: float


CATEGORIES: tuple[Category, ...] = (
    Category("5411", "grocery", 0.14, 0.10, 45.0, 0.8),
    Category("5812", "restaurants", 0.14, 0.05, 35.0, 0.6),
    Category("5814", "fast_food", 0.10, 0.15, 11.0, 0.5),
    Category("5541", "fuel", 0.07, 0.00, 48.0, 0.4),
    Category("4121", "rideshare_taxi", 0.05, 0.95, 18.0, 0.6),
    Category("5691", "clothing", 0.10, 0.55, 75.0, 0.8),
    Category("5732", "electronics", 0.06, 0.60, 180.0, 1.0),
    Category("5944", "jewelry", 0.02, 0.40, 320.0, 1.1),
    Category("5815", "digital_goods", 0.08, 1.00, 9.0, 0.9),
    Category("4511", "airlines", 0.03, 0.90, 380.0, 0.7),
    Category("7011", "hotels", 0.05, 0.70, 240.0, 0.7),
    Category("5999", "misc_retail", 0.12, 0.40, 40.0, 1.0),
    Category("6540", "stored_value", 0.04, 0.90, 100.0, 0.6),
)

# Share of charges per local hour 0..23: quiet nights, a lunch bump, an evening peak.
HOURLY = (
    0.8,
    0.5,
    0.35,
    0.3,
    0.3,
    0.5,
    1.2,
    2.6,
    4.0,
    4.8,
    5.4,
    6.2,
    7.0,
    6.6,
    5.8,
    5.6,
    5.9,
    6.6,
    7.2,
    7.0,
    6.0,
    4.6,
    3.0,
    1.6,
)
# Relative volume Monday..Sunday: a Friday/Saturday peak and a quiet Sunday.
WEEKLY = (0.94, 0.96, 1.0, 1.03, 1.16, 1.12, 0.79)

# (code, weight) when an ordinary charge is declined, by context.
DECLINE_ORDINARY = (
    ("do_not_honor", 0.34),
    ("insufficient_funds", 0.30),
    ("generic_decline", 0.18),
    ("expired_card", 0.07),
    ("incorrect_cvc", 0.06),
    ("card_velocity_exceeded", 0.05),
)
DECLINE_CROSS_BORDER = "transaction_not_allowed"
DECLINE_CARD_TESTING = (
    ("incorrect_cvc", 0.34),
    ("generic_decline", 0.24),
    ("incorrect_number", 0.16),
    ("do_not_honor", 0.14),
    ("insufficient_funds", 0.12),
)
DECLINE_STOLEN = (("fraudulent", 0.35), ("do_not_honor", 0.30), ("stolen_card", 0.25), ("lost_card", 0.10))

# Cards per customer: 1, 2, 3, 4.
CARDS_PER_CUSTOMER = (0.55, 0.28, 0.12, 0.05)


# -- authorization attempts (see `_auth` and docs/datagen.md, "Authorizations") ------------------------------

# Decline codes as the networks group them for retries. Hard: the issuer will not approve this card data as it
# stands (Visa's category 1 "never approve" and category 3 "data quality", Mastercard's advice 03 "do not try
# again"); retrying unchanged is forbidden. Soft: the issuer cannot approve *now* (Visa categories 2 and 4).
HARD_CODES = (
    "fraudulent",
    "stolen_card",
    "lost_card",
    "incorrect_number",
    "expired_card",
    "incorrect_cvc",
    "transaction_not_allowed",
)
SOFT_CODES = ("do_not_honor", "insufficient_funds", "generic_decline", "card_velocity_exceeded", "try_again_later")


@dataclass(frozen=True)
class Recovery:
    """When a soft decline stops applying: never with probability `never`, else after a lognormal delay (hours).

    Before that, a retry is approved only with probability AUTH_LEAK (the issuer rarely changes its mind)."""

    code: str
    never: float
    median_h: float
    sigma: float


RECOVERY = (
    Recovery("do_not_honor", 0.60, 3.0, 1.0),
    Recovery("insufficient_funds", 0.35, 36.0, 0.6),  # funds arrive: payday, a transfer
    Recovery("generic_decline", 0.55, 6.0, 1.0),
    Recovery("card_velocity_exceeded", 0.15, 24.0, 0.15),  # the issuer's 24 h velocity window rolls over
    Recovery("try_again_later", 0.05, 0.02, 0.5),  # the outage itself decides (AUTH_OUTAGE_DECLINE while it lasts)
)
AUTH_LEAK = 0.03

# Merchant advice codes (Mastercard's numbering): what the issuer tells the merchant about retrying.
ADVICE_NEW_ACCOUNT_INFO = "01"  # expired card: ask for the new expiry, do not retry as is
ADVICE_TRY_LATER = "02"  # issuer or system unavailable
ADVICE_DO_NOT_RETRY = "03"
# (code, retry after hours): the hint given for a recoverable soft decline, the largest not after recovery
ADVICE_RETRY_AFTER = (("24", 1.0), ("25", 24.0), ("26", 48.0), ("27", 96.0))
AUTH_ADVICE_SHARE = 0.7  # recoverable soft declines that carry a retry-after hint
AUTH_ADVICE_NOISE = 0.15  # unrecoverable soft declines that carry one anyway (a random hint)

# Issuer outages: windows where one issuer declines most attempts with try_again_later.
OUTAGES_PER_DAY = 0.4
OUTAGE_MEDIAN_H = 1.5
AUTH_OUTAGE_DECLINE = 0.92

# Issuer policies on top of the charge's own decline model (`_charges.decline_logit`), each an independent
# extra decline chance: at night in the card's country, per BIN (some ranges are stricter), and per decline
# of the card in the previous 24 hours (approval is multiplied by AUTH_RECENT_FACTOR for each).
AUTH_NIGHT_HOURS = (0, 1, 2, 3, 4, 5)
AUTH_NIGHT_DECLINE = 0.05
AUTH_BIN_DECLINE_MAX = 0.08
AUTH_RECENT_FACTOR = 0.7

# How merchants retry soft declines: a fixed schedule (hours after the first attempt), except a share of
# declines in a randomised-delay experiment: up to as many retries, gaps log-uniform in [min, max] hours.
FIXED_RETRY_HOURS = (1.0, 24.0, 72.0)
EXPERIMENT_SHARE = 0.3
EXPERIMENT_GAP_H = (1.0 / 6, 120.0)
