"""Budgets on profiled functions and sessions: warn once, or refuse the next call once exhausted."""

from __future__ import annotations

import threading
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from ._guard import warn_user
from .pricing import FEMTO_PER_USD, exact_amount, usd

__all__ = ["Budget", "BudgetExceededError"]

OnExceeded = Literal["warn", "raise"]


def dollars(amount: Decimal | float) -> str:
    """An exact amount as written, without trailing zeros: a budget of $0.00001 (an embeddings job) and
    what it spent stay legible, where a fixed number of decimals shows both as $0.000000."""
    exact = amount if isinstance(amount, Decimal) else Decimal(repr(amount))  # a float's shortest repr
    return f"${exact.normalize():f}"


class BudgetExceededError(RuntimeError):
    """Raised before an LLM call starts under a budget the user asked to enforce that is spent."""

    def __init__(self, span: str, spent_usd: Decimal | float, budget_usd: Decimal | float) -> None:
        self.span = span
        self.spent_usd = float(spent_usd)
        self.budget_usd = float(budget_usd)
        self._amounts = (spent_usd, budget_usd)
        super().__init__(f"tokenspy budget exceeded for {span!r}: spent {dollars(spent_usd)} "
                         f"of {dollars(budget_usd)}; the call was refused before it started")

    def __reduce__(self) -> tuple[type[BudgetExceededError], tuple[str, Decimal | float, Decimal | float]]:
        # Raised in a worker process (a ProcessPoolExecutor), it reaches the parent as itself.
        return type(self), (self.span, *self._amounts)


class Budget:
    __slots__ = ("_lock", "exhausted", "limit", "name", "on_exceeded", "spent", "warned")

    def __init__(self, name: str, budget_usd: float | int | Decimal | Fraction, on_exceeded: OnExceeded) -> None:
        self.name = name
        # The facade hands over an amount exact_amount already checked (once per decoration, not per
        # invocation); anything else is checked here.
        amount = (budget_usd if isinstance(budget_usd, Decimal | Fraction)
                  else exact_amount(budget_usd, "budget_usd", "USD"))
        self.limit = int(amount * FEMTO_PER_USD)
        self.on_exceeded = on_exceeded
        self.spent = 0
        self.warned = False
        self.exhausted = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Called as a call starts: refuse it if an enforced budget is already spent."""
        if self.exhausted:
            raise BudgetExceededError(self.name, usd(self.spent), usd(self.limit))

    def add(self, cost: int | None) -> None:
        if not cost:
            return
        with self._lock:
            self.spent += cost
            crossed = self.spent > self.limit and not self.warned
            if crossed:
                self.warned = True
                self.exhausted = self.on_exceeded == "raise"
        if crossed:
            warn_user(f"tokenspy: {self.name!r} spent {dollars(usd(self.spent))}, over its budget of "
                      f"{dollars(usd(self.limit))}")
