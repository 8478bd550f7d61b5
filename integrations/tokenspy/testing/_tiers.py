"""The service tier (and Anthropic speed) a request is answered with, as the real APIs report them.

tokenspy, like any cost tracker, prices a call at the tier the *response* names (OpenAI's flex is half
price, priority double). So the fake names the tier it was asked for, as the real APIs do; a test of a
flex call then sees flex prices. The fake serves every tier it is asked for: it has no capacity to
run out of. A value the real API would refuse is refused (HTTP 400), so a typo cannot silently test
the default tier.
"""

from __future__ import annotations

from ._wire import BadRequest, Call

__all__ = ["anthropic_speed", "check_anthropic_tier", "openai_tier"]

# openai's `service_tier` request values -> the `service_tier` of the response (openai's
# `CompletionCreateParams` docs): "auto", the default, is the project's tier, "default" unless
# configured otherwise; "fast" is served and reported as "priority".
_OPENAI_TIERS = {
    "auto": "default",
    "default": "default",
    "flex": "flex",
    "scale": "scale",
    "priority": "priority",
    "fast": "priority",
}
_ANTHROPIC_TIERS = ("auto", "standard_only")
_ANTHROPIC_SPEEDS = ("standard", "fast")


def openai_tier(call: Call) -> str:
    """The tier an OpenAI response (every chunk of a stream, every Response object) says it served."""
    value = call.body.get("service_tier")
    if value is None:
        return "default"
    served = _OPENAI_TIERS.get(value) if isinstance(value, str) else None
    if served is None:
        raise BadRequest(f"Invalid value for 'service_tier': {value!r}; supported values: {sorted(_OPENAI_TIERS)}")
    return served


def check_anthropic_tier(call: Call) -> None:
    """Refuse a `service_tier` the real API refuses. Every accepted one is answered with
    `usage.service_tier: "standard"`: "auto" uses priority capacity only for an organization with a
    Priority Tier commitment, which the fake does not model, and "standard_only" never does."""
    value = call.body.get("service_tier")
    if value is not None and value not in _ANTHROPIC_TIERS:
        raise BadRequest(f"service_tier: Input should be 'auto' or 'standard_only', got {value!r}")


def anthropic_speed(call: Call) -> str | None:
    """`usage.speed` of the answer: the `speed` asked for ("fast" mode is priced at its own rates)."""
    value = call.body.get("speed")
    if value is not None and value not in _ANTHROPIC_SPEEDS:
        raise BadRequest(f"speed: Input should be 'standard' or 'fast', got {value!r}")
    return value if isinstance(value, str) else None
