"""Prices from genai-prices, resolved once per model (until its next dated price change), applied with
exact integer arithmetic.

Costs are integers in femto-dollars (1e-15 USD) so that sums over millions of calls never drift;
`cost_usd` floats are derived from them only for display. A price in USD per million tokens is
`price * 1e9` femto-dollars per token: exact for any price with up to nine decimals.

genai-prices is imported lazily (~300 ms) and queried against a snapshot of our own, so another
library calling its `UpdatePrices` cannot change our numbers mid-process.
"""

from __future__ import annotations

import calendar
import logging
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from numbers import Integral, Rational, Real
from typing import Any

from ._guard import log_internal_error, warn_user
from .usage import Usage

__all__ = ["FEMTO_PER_USD", "MAX_PRICE_PER_MTOK", "ModelRates", "PriceBook", "Rates", "exact_amount", "provider_at",
           "usd"]

logger = logging.getLogger("tokenspy")

FEMTO_PER_USD = 10**15
_FEMTO_PER_TOKEN_PER_MTOK = Decimal(10**9)
# $1 per token. The dearest model genai-prices lists costs a few hundred dollars per million tokens: a
# price above this is a mistake (cents for dollars, a price per billion, a stray exponent), and an
# unbounded one would overflow the float `cost_usd` later, far from its cause.
MAX_PRICE_PER_MTOK = 1_000_000

# Our provider names -> genai-prices provider ids, where they differ.
_PROVIDER_IDS = {"bedrock": "aws", "amazon_bedrock": "aws", "azure_openai": "azure", "vertexai": "google",
                 "google_genai": "google", "google_vertexai": "google", "gemini": "google", "xai": "x-ai"}
_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8})$")
# The model makers whose own price wins when a name no provider pattern claims is listed by several
# providers (an Azure or OpenRouter listing of an OpenAI model is the same model, resold).
_MAKERS = ("openai", "anthropic", "google")


# base URL -> the provider serving it (None: no provider claims it). Bounded: a program that builds a
# client per request with a URL of its own (an account or a session in the path) must not grow it.
_HOSTS: dict[str, str | None] = {}
_MAX_HOSTS = 256


def provider_at(url: str) -> str | None:
    """The genai-prices id of the provider whose API `url` is (`"groq"` for https://api.groq.com/openai/v1,
    `"openai"` for https://api.openai.com/v1), or None for a host none claims (a local server, a proxy).

    Matched as `calc_price(provider_api_url=...)` matches, each provider's `api_pattern` from the start
    of the URL, the first in genai-prices' order winning; resolved once per URL (a regex per provider,
    too slow for a request's path)."""
    try:
        return _HOSTS[url]
    except KeyError:
        pass
    provider: str | None = None
    try:
        from genai_prices.data import providers
    except ImportError:  # pragma: no cover - a core dependency
        return None
    for candidate in providers:
        if re.match(candidate.api_pattern, url):
            provider = candidate.id
            break
    if provider == "google" and "aiplatform.googleapis.com" in url:
        # Priced as Google's; but Vertex AI served it, not the Gemini API (OpenTelemetry tells them apart).
        provider = "google_vertexai"
    if len(_HOSTS) >= _MAX_HOSTS:
        _HOSTS.clear()
    _HOSTS[url] = provider
    return provider


def usd(femto: int) -> Decimal:
    """Exact USD value of a femto-dollar amount."""
    return Decimal(femto).scaleb(-15)


def exact_amount(value: Any, what: str, unit: str) -> Decimal | Fraction:
    """`value` (an int, float, Decimal or Fraction, finite and >= 0) as an exact number; `what` names
    the argument in the error.

    A float is taken by its shortest repr (0.1 is the 0.1 the user typed, not its binary neighbour); a
    Fraction stays a Fraction, since 1/3 has no exact Decimal. Strings are refused, not parsed: a
    price or budget read from text without conversion is a bug better caught here.
    """
    if isinstance(value, Decimal):
        number: Decimal | Fraction = value
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what} must be a number ({unit}: int, float, Decimal or Fraction), "
                        f"got {value!r}")
    elif isinstance(value, Integral):
        number = Decimal(int(value))
    elif isinstance(value, Rational):
        number = Fraction(int(value.numerator), int(value.denominator))
    else:
        try:
            number = Decimal(str(float(value)))
        except OverflowError:  # a float() of a huge exotic Real; reported like any non-finite amount
            number = Decimal("Infinity")
    # is_finite first: comparing a signalling NaN raises decimal.InvalidOperation.
    if (isinstance(number, Decimal) and not number.is_finite()) or number < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of {unit}, got {value!r}")
    return number


def _per_token(price_per_mtok: Any, what: str) -> int:
    value: Decimal | Fraction
    if isinstance(price_per_mtok, str):
        # Kept for prices written as decimal text ("0.1"), which existing callers and tests rely on;
        # only text that is a number passes, so it cannot turn into a wrong price.
        try:
            value = Decimal(price_per_mtok)
        except ArithmeticError:
            raise TypeError(f"{what} must be a number (USD per million tokens), got {price_per_mtok!r}") from None
        exact_amount(value, what, "USD per million tokens")  # the same finite, >= 0 check
    else:
        value = exact_amount(price_per_mtok, what, "USD per million tokens")
    if value > MAX_PRICE_PER_MTOK:
        raise ValueError(f"{what} must be at most {MAX_PRICE_PER_MTOK:,} USD per million tokens ($1 per token), "
                         f"got {price_per_mtok!r}")
    if isinstance(value, Fraction):
        return round(value * 10**9)  # round() of a Fraction is half-even, as below
    return int((value * _FEMTO_PER_TOKEN_PER_MTOK).to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Rates:
    """Femto-dollars per token for each kind of token."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    cache_write_1h: int

    def cost(self, u: Usage) -> int:
        return self._cost(u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens,
                          u.cache_write_1h_tokens)

    def _cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int,
              cache_write_1h: int) -> int:
        """`cost(Usage(...))` without building the Usage: the once-per-call hot path."""
        if not cache_read and not cache_write:  # most calls
            return input_tokens * self.input + output_tokens * self.output
        write_1h = cache_write_1h if cache_write_1h < cache_write else cache_write
        uncached = input_tokens - cache_read - cache_write
        if uncached < 0:
            uncached = 0
        return (uncached * self.input + cache_read * self.cache_read
                + (cache_write - write_1h) * self.cache_write + write_1h * self.cache_write_1h
                + output_tokens * self.output)


@dataclass(frozen=True, slots=True)
class ModelRates:
    """A model's rates, with long-context tiers: past a tier's threshold of total input tokens,
    that tier's rates apply to every token of the call (the providers' "cliff" pricing)."""

    base: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    source: str = "genai-prices"

    def cost(self, u: Usage) -> int:
        return self._cost(u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens,
                          u.cache_write_1h_tokens)

    def _cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int,
              cache_write_1h: int) -> int:
        """`cost(Usage(...))` without building the Usage: the once-per-call hot path."""
        rates = self.base
        if self.tiers:
            for start, tier in reversed(self.tiers):
                if input_tokens > start:
                    rates = tier
                    break
        elif not cache_read and not cache_write:  # most calls: `Rates._cost`'s fast path, one call fewer
            return input_tokens * rates.input + output_tokens * rates.output
        return rates._cost(input_tokens, output_tokens, cache_read, cache_write, cache_write_1h)


def _rates(input: int, output: int, cached: int | None, write: int | None, write_1h: int | None) -> Rates:
    write_rate = input if write is None else write
    return Rates(input=input, output=output, cache_read=input if cached is None else cached,
                 cache_write=write_rate, cache_write_1h=write_rate if write_1h is None else write_1h)


def _from_genai(model_price: Any) -> ModelRates | None:
    keys = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok")
    values: list[Any] = [getattr(model_price, key, None) for key in keys]
    if values[0] is None and values[1] is None:
        return None
    starts = sorted({tier.start for value in values if hasattr(value, "tiers") for tier in value.tiers})

    def at(value: Any, threshold: int | None) -> int | None:
        if value is None:
            return None
        if hasattr(value, "tiers"):
            price = value.base
            for tier in value.tiers:
                if threshold is not None and threshold >= tier.start:
                    price = tier.price
            return _per_token(price, "price")
        return _per_token(value, "price")

    def build(threshold: int | None) -> Rates:
        i, o, c, w, w1 = (at(v, threshold) for v in values)
        return _rates(i or 0, o or 0, c, w, w1)

    return ModelRates(base=build(None), tiers=tuple((s, build(s)) for s in starts))


_DAY = 86_400.0


def _price_window(info: Any, at: float) -> tuple[float, float]:
    """[start, until): the span of time around `at` (epoch seconds) in which `info`'s prices stay what
    they are at `at`. genai-prices dates price changes (`StartDateConstraint`: a new price from a UTC
    day on) and prices some hours apart (`TimeOfDateConstraint`: off-peak rates); its `get_prices`
    picks by the request's time, so a price kept past a boundary would be another day's."""
    constraints = [price.constraint for price in info.prices] if isinstance(info.prices, list) else []
    constraints += [variant.constraint for variant in info.price_variants or ()]
    start, until = -math.inf, math.inf
    for constraint in constraints:
        day = getattr(constraint, "start_date", None)
        if isinstance(day, date):  # active from that UTC day's midnight on
            boundaries: tuple[float, ...] = (float(calendar.timegm(day.timetuple())),)
        elif constraint is not None and hasattr(constraint, "start_time"):  # a daily interval, in UTC
            midnight = at - at % _DAY
            boundaries = tuple(midnight + offset + _utc_seconds(moment)
                               for moment in (constraint.start_time, constraint.end_time)
                               for offset in (-_DAY, 0.0, _DAY))
        else:  # none, or a kind this genai-prices version does not have: the price does not move
            continue
        for boundary in boundaries:
            if boundary <= at:
                start = max(start, boundary)
            else:
                until = min(until, boundary)
    return start, until


def _utc_seconds(moment: time_of_day) -> float:
    """Seconds into the UTC day of a time of day (a naive one is UTC, as genai-prices reads it)."""
    if moment.tzinfo is not None:
        moment = datetime.combine(date(1970, 1, 1), moment).astimezone(UTC).timetz()
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def _exact_names(providers: list[Any]) -> dict[str, tuple[tuple[str, Any], ...]]:
    """Lower-cased name -> (provider id, listing) for every name a provider lists exactly: a model's
    id and the names its match rule equals (not the prefixes, substrings or patterns it also takes)."""
    from genai_prices.types import ClauseEquals, ClauseOr

    def equal_names(clause: Any) -> list[str]:
        if isinstance(clause, ClauseEquals):
            return [clause.equals.lower()]
        if isinstance(clause, ClauseOr):  # an `and` of rules is not met by a name equal to one of them
            return [name for inner in clause.or_ for name in equal_names(inner)]
        return []

    index: dict[str, list[tuple[str, Any]]] = {}
    for provider in providers:
        for info in provider.models:
            for name in dict.fromkeys([info.id.lower(), *equal_names(info.match)]):
                index.setdefault(name, []).append((provider.id, info))
    return {name: tuple(listings) for name, listings in index.items()}


class PriceBook:
    """Model -> rates: user overrides first, then genai-prices; unknown models warn once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, ModelRates] = {}
        # Whether `set_price` was ever used (since `clear_overrides`): without, a call's pricing skips
        # every check for a price set on another of its names.
        self.overridden = False
        self._cache: dict[tuple[str, str | None, str | None, str | None], ModelRates | None] = {}
        # [from, until), epoch seconds: when every cached price holds (genai-prices dates price changes).
        # A lookup past `until` empties the cache; one before `from` (a call started before a price
        # change, ended after) is not cached.
        self._valid_from = -math.inf
        self._valid_until = math.inf
        self._dated = False  # whether the window is bounded: without, a cached price is good at any time
        self._born = time.time()
        self._warned: set[str] = set()
        self._snapshot: Any = None
        self._by_name: dict[str, tuple[tuple[str, Any], ...]] | None = None  # built at the first use
        # Names left unpriced because the providers listing them disagree: the warning says which.
        self._ambiguous: dict[str, tuple[str, ...]] = {}

    def set_price(self, model: str, *, input: Any, output: Any, cached_input: Any = None,
                  cache_write: Any = None, cache_write_1h: Any = None) -> None:
        if not isinstance(model, str) or not model.strip():
            raise TypeError(f"model must be a non-empty string, got {model!r}")
        rates = _rates(
            _per_token(input, "input"), _per_token(output, "output"),
            None if cached_input is None else _per_token(cached_input, "cached_input"),
            None if cache_write is None else _per_token(cache_write, "cache_write"),
            None if cache_write_1h is None else _per_token(cache_write_1h, "cache_write_1h"),
        )
        with self._lock:
            self._overrides[model.lower()] = ModelRates(base=rates, source="user")
            self.overridden = True
            self._clear_cache()

    def clear_overrides(self) -> None:
        with self._lock:
            self._overrides.clear()
            self.overridden = False
            self._clear_cache()

    def _clear_cache(self) -> None:
        self._cache.clear()
        self._valid_from, self._valid_until = -math.inf, math.inf
        self._dated = False

    def rates_for(self, model: str | None, provider: str | None = None, service_tier: str | None = None,
                  warn: bool = True, speed: str | None = None, at: float | None = None) -> ModelRates | None:
        """`model`'s rates, or None (warned about once per model, unless `warn` is false: a lookup that
        prices no call, such as a hint's, must not claim calls went unpriced).

        `service_tier`: the tier the provider says it served the call at (OpenAI's "flex", "priority",
        ...), priced at that tier's rates where genai-prices has them; likewise `speed` (Anthropic's
        "fast" mode). A price set with `set_price` is what the user pays, whatever the tier or speed.
        `at`: when the call was made (epoch seconds; now if not given), for prices that change on a date."""
        if not model:
            return None
        key = (model, provider, service_tier, speed)
        rates: ModelRates | None
        try:
            rates = self._cache[key]
        except KeyError:
            rates = self._resolve(key, time.time() if at is None else at)
        else:
            if self._dated:  # a cached price changes on a date: the call's time must be in their window
                if at is None:
                    at = time.time()
                if not self._valid_from <= at < self._valid_until:
                    rates = self._resolve(key, at)
        if rates is None and warn:
            self._warn_unpriced(model)  # once per model: the first lookup that prices a call says it
        return rates

    def _resolve(self, key: tuple[str, str | None, str | None, str | None], at: float) -> ModelRates | None:
        """`rates_for` past the cache: looked up, and cached unless `at` is before the cached prices' time."""
        model, provider, service_tier, speed = key
        if at >= self._valid_until:  # the clock passed a cached price's next change: none is kept
            with self._lock:
                if at >= self._valid_until:
                    self._clear_cache()
        rates: ModelRates | None = self._override(model)
        start, until = -math.inf, math.inf
        if rates is None:
            rates, start, until = self._lookup(model, provider, service_tier, speed, at)
        with self._lock:
            if self._valid_from <= at < self._valid_until:
                self._cache[key] = rates
                if start > self._born:  # (no call of this process started before this book existed)
                    self._valid_from = max(self._valid_from, start)
                self._valid_until = min(self._valid_until, until)
                self._dated = self._valid_from > -math.inf or self._valid_until < math.inf
        return rates

    def priced_name(self, model: str | None, requested: str | None, provider: str | None = None,
                    service_tier: str | None = None, speed: str | None = None,
                    at: float | None = None) -> str | None:
        """The name a call is priced by, of the model the provider served (`model`) and the one asked for
        (`requested`: an Azure deployment, a gateway's or a team's alias): a price the user set for the
        served one, else one set for the one asked for, else the served one's listed price, else the
        one asked for (a served name no price source knows, such as a fake's fixed name)."""
        if not requested or requested == model:
            return model
        served = self.rates_for(model, provider, service_tier, False, speed, at)
        if served is not None and served.source == "user":
            return model
        if self.overridden:
            asked = self.rates_for(requested, provider, service_tier, False, speed, at)
            if asked is not None and asked.source == "user":
                return requested
        return requested if served is None else model

    def _override(self, model: str) -> ModelRates | None:
        if not self._overrides:
            return None
        name = model.lower()
        for candidate in (name, _DATE_SUFFIX.sub("", name), name.rsplit("/", 1)[-1],
                          _DATE_SUFFIX.sub("", name.rsplit("/", 1)[-1])):
            if candidate in self._overrides:
                return self._overrides[candidate]
        return None

    def _lookup(self, model: str, provider: str | None, service_tier: str | None, speed: str | None,
                at: float) -> tuple[ModelRates | None, float, float]:
        """genai-prices' rates for `model` at `at`, with the span of time they hold (`_price_window`)."""
        snapshot = self._genai_snapshot()
        if snapshot is None:
            return None, -math.inf, math.inf
        provider_id = _PROVIDER_IDS.get(provider or "", provider) if provider else None
        attempts: list[str | None] = [provider_id] if provider_id else []
        attempts.append(None)
        if "/" in model:
            attempts.append("litellm")
        context = {name: value for name, value in (("service_tier", service_tier), ("speed", speed)) if value} or None
        now = datetime.fromtimestamp(at, tz=UTC)

        for attempt in attempts:
            try:
                _, info = snapshot.find_provider_model(model, None, attempt, None)
            except LookupError:
                continue
            return (_from_genai(info.get_prices(now, context)), *_price_window(info, at))
        # No provider's name pattern claims the model (text-embedding-3-small, chatgpt-4o-latest, a name
        # only hosts list): look it up by exact name in every provider's list. Only after every attempt
        # above missed, so no model priced by them changes price.
        listings = self._listed_as(model)
        for maker in _MAKERS:
            for provider_id, info in listings:
                if provider_id == maker:
                    return (_from_genai(info.get_prices(now, context)), *_price_window(info, at))
        if provider or not listings:
            # The caller named who served the call (a local server, a gateway): another host's price
            # for the name would be a guess about someone else's bill.
            return None, -math.inf, math.inf
        found = {rates for _, info in listings if (rates := _from_genai(info.get_prices(now, context))) is not None}
        windows = [_price_window(info, at) for _, info in listings]
        start, until = max(window[0] for window in windows), min(window[1] for window in windows)
        if len(found) == 1:
            return found.pop(), start, until
        if found:  # hosts charge different prices for one open model: which one served it is unknown
            self._ambiguous[model] = tuple(provider_id for provider_id, _ in listings)
        return None, start, until

    def _listed_as(self, model: str) -> tuple[tuple[str, Any], ...]:
        """(provider id, listing) of every provider that lists `model` under exactly that name.

        Exact names only: providers' own match rules are written for names sent to them, and applied
        to another provider's name they mislead (Google's Vertex listing of Claude matches any name
        containing "claude-opus-4.6", OpenRouter's dearer "anthropic/claude-opus-4.6-fast" included)."""
        index = self._by_name
        if index is None:
            index = self._by_name = _exact_names(self._snapshot.providers)
        return index.get(model.lower(), ())

    def preload(self) -> None:
        """Import the price data now rather than at the first call's end. Importing genai-prices imports
        httpx2, and a module half imported in one thread is visible to the others: the openai SDK, which
        looks httpx2 up in `sys.modules` on every request, then fails on it (a fresh process's first
        burst of concurrent calls). Never raises: a failure here is the first lookup's to report."""
        try:
            self._genai_snapshot()
        except Exception as exc:
            log_internal_error("price data", exc)

    def _genai_snapshot(self) -> Any:
        if self._snapshot is None:
            try:
                from genai_prices.data import providers
                from genai_prices.data_snapshot import DataSnapshot
            except ImportError:  # pragma: no cover - a core dependency
                return None
            self._snapshot = DataSnapshot(providers=providers, from_auto_update=False)
        return self._snapshot

    def _warn_unpriced(self, model: str) -> None:
        if model in self._warned:  # every later call of an unpriced model: no lock
            return
        if sys.is_finalizing():  # a stream dropped at interpreter shutdown: genai-prices cannot be imported
            return
        with self._lock:
            if model in self._warned:
                return
            self._warned.add(model)
        hosts = self._ambiguous.get(model)
        if hosts:
            shown = ", ".join(hosts[:5]) + (f" and {len(hosts) - 5} more" if len(hosts) > 5 else "")
            message = (f"tokenspy: model {model!r} is priced differently by {shown}; its calls are counted "
                       f"with cost None. Pass provider= (the host that served it) or set a price with "
                       f"tokenspy.set_price({model!r}, input=..., output=...).")
        else:
            message = (f"tokenspy: no price known for model {model!r}; its calls are counted with cost None. "
                       f"Set one with tokenspy.set_price({model!r}, input=..., output=...).")
        # On the logger when something handles it (the app's logging, pytest's caplog); with no handler
        # anywhere the record would reach stderr beside the warning: the same line twice.
        logged = logger.hasHandlers()
        if logged:
            logger.warning(message)
        warn_user(message, logged=logged)
