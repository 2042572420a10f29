"""The simulated card processor and its ledger of charges."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from shop.common.faults import PaymentFaults
from shop.settings import PaymentsSettings

# Like the test cards of real processors: this number is always declined.
DECLINED_CARD = "4000000000000002"
AUTHORIZED = "authorized"
DECLINED = "declined"
# The ledger forgets the oldest orders past this many, so memory stays bounded.
LEDGER_SIZE = 100_000


class ProcessorUnavailable(Exception):
    """The processor failed before deciding; nothing was charged and a retry may succeed."""


@dataclass(frozen=True)
class Charge:
    payment_id: str
    order_id: str
    amount: float
    outcome: str
    # True when this order had been charged before and that result is returned again.
    duplicate: bool = False


class CardProcessor:
    def __init__(self, settings: PaymentsSettings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self._ledger: OrderedDict[str, Charge] = OrderedDict()

    def latency_s(self, faults: PaymentFaults) -> float:
        base_ms = self._rng.uniform(self._settings.latency_min_ms, self._settings.latency_max_ms)
        return (base_ms + self._settings.extra_delay_ms + faults.delay_ms) / 1000

    def _previous(self, order_id: str) -> Charge | None:
        charge = self._ledger.get(order_id)
        if charge is None:
            return None
        return Charge(charge.payment_id, order_id, charge.amount, charge.outcome, duplicate=True)

    async def charge_card(self, order_id: str, amount: float, card_number: str, faults: PaymentFaults) -> Charge:
        """Decide one charge; an order is charged at most once, however often it is sent."""
        previous = self._previous(order_id)
        if previous is not None:
            return previous
        await asyncio.sleep(self.latency_s(faults))
        if faults.fail or self._rng.random() < self._settings.failure_rate:
            raise ProcessorUnavailable("the card processor did not answer")
        # A concurrent call for the same order may have finished while this one slept.
        previous = self._previous(order_id)
        if previous is not None:
            return previous
        outcome = DECLINED if card_number == DECLINED_CARD else AUTHORIZED
        charge = Charge(uuid.uuid4().hex, order_id, amount, outcome)
        self._ledger[order_id] = charge
        if len(self._ledger) > LEDGER_SIZE:
            self._ledger.popitem(last=False)
        return charge
