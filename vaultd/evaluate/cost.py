"""What model calls cost: token counts, added up per note and per run, priced from a table.

Prices are US dollars per million tokens, per model, editable in the vault's config
(``[prices."model-name"]``). A model missing from the table is priced by its family
(opus, sonnet, haiku) and otherwise not at all. Replies served from vaultd's own
response cache cost nothing and add no tokens.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vaultd.config import Price
from vaultd.evaluate.ask import ModelReply

# Estimates by family; set real prices for the models you use in the vault's config.
FAMILY_PRICES = {
    "opus": Price(input=15.0, output=75.0),
    "sonnet": Price(input=3.0, output=15.0),
    "haiku": Price(input=1.0, output=5.0),
}


def price_for(model: str, table: dict[str, Price]) -> Price | None:
    if model in table:
        return table[model]
    for family, price in FAMILY_PRICES.items():
        if family in model:
            return price
    return None


BATCH_DISCOUNT = 0.5  # the Message Batches API bills every token at half the price


@dataclass
class Usage:
    """Tokens and dollars, added up from replies; safe to add to from several threads."""

    requests: int = 0
    cached: int = 0  # replies served by vaultd's response cache
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float = 0.0
    unpriced: bool = False  # some reply's model had no price

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, reply: ModelReply, prices: dict[str, Price]) -> None:
        discount = BATCH_DISCOUNT if reply.batch else 1.0
        with self._lock:
            if reply.from_cache:
                self.cached += 1
                return
            self.requests += 1
            self.input_tokens += reply.input_tokens
            self.output_tokens += reply.output_tokens
            self.cache_read_tokens += reply.cache_read_tokens
            self.cache_write_tokens += reply.cache_write_tokens
            price = price_for(reply.model, prices)
            if price is None:
                self.unpriced = True
                return
            read = price.cache_read if price.cache_read is not None else price.input * 0.1
            write = price.cache_write if price.cache_write is not None else price.input * 1.25
            self.cost += discount * (
                reply.input_tokens * price.input
                + reply.output_tokens * price.output
                + reply.cache_read_tokens * read
                + reply.cache_write_tokens * write
            ) / 1_000_000

    def merge(self, other: Usage) -> None:
        with self._lock:
            self.requests += other.requests
            self.cached += other.cached
            self.input_tokens += other.input_tokens
            self.output_tokens += other.output_tokens
            self.cache_read_tokens += other.cache_read_tokens
            self.cache_write_tokens += other.cache_write_tokens
            self.cost += other.cost
            self.unpriced = self.unpriced or other.unpriced

    @property
    def used(self) -> bool:
        return bool(self.requests or self.cached)

    def summary(self) -> str:
        """One line, e.g. ``2 requests (1 from cache), 1,234 tokens in, 56 out, ~$0.0045``."""
        cost = f"~${self.cost:.4f}" + (" (some models unpriced)" if self.unpriced else "")
        return (f"{self.requests} requests ({self.cached} from cache), "
                f"{self.input_tokens + self.cache_read_tokens + self.cache_write_tokens:,} "
                f"tokens in, {self.output_tokens:,} out, {cost}")
