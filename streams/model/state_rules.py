"""OpenFn's state size rules: warn above one limit, do not store above another."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class StateDecision(Enum):
    STORE = "store"
    STORE_WITH_WARNING = "store_with_warning"
    REJECT_TOO_LARGE = "reject_too_large"


@dataclass(frozen=True, slots=True)
class StateLimits:
    warn_bytes: int = 10_000
    max_bytes: int = 50_000

    def decide(self, size: int) -> StateDecision:
        if size > self.max_bytes:
            return StateDecision.REJECT_TOO_LARGE
        if size > self.warn_bytes:
            return StateDecision.STORE_WITH_WARNING
        return StateDecision.STORE
