"""Per-connection flow control: bytes sent that the client has not acknowledged yet, and the rate of
frames a client may send.

Under daphne ``send()`` never blocks, so a client that stops reading lets the
server buffer without limit. The client's acknowledgement is its ``pong``:
each ``ping`` carries a random id and the sent-byte count at that moment,
and only a ``pong`` echoing an outstanding id proves the client read
everything up to that ping. An unsolicited ``pong`` proves nothing and is
ignored. Bytes sent but not acknowledged are bounded by a budget.
"""

from __future__ import annotations

import secrets
import time

MAX_OUTSTANDING_PINGS = 8


class FlowControl:
    __slots__ = ("acked", "budget", "pings", "sent")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.sent = 0
        self.acked = 0
        #: ping id -> (bytes sent when it was sent, monotonic time it was sent)
        self.pings: dict[str, tuple[int, float]] = {}

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    def on_send(self, nbytes: int) -> bool:
        """Count an outgoing frame; False when the unacknowledged bytes exceed the budget."""
        self.sent += nbytes
        return self.sent - self.acked <= self.budget

    def wants_ping(self) -> bool:
        """Ask for an acknowledgement early once a quarter of the budget is unacknowledged."""
        return len(self.pings) < MAX_OUTSTANDING_PINGS and self.in_flight > self.budget // 4 and (
            not self.pings or max(sent for sent, _ in self.pings.values()) < self.sent - self.budget // 4
        )

    def new_ping(self) -> str:
        ping_id = secrets.token_hex(8)
        self.pings[ping_id] = (self.sent, time.monotonic())
        return ping_id

    def on_pong(self, ping_id: object) -> bool:
        """True when ``ping_id`` answers an outstanding ping (earlier pings count as answered too)."""
        if not isinstance(ping_id, str):
            return False
        entry = self.pings.pop(ping_id, None)
        if entry is None:
            return False
        sent_then = entry[0]
        self.acked = max(self.acked, sent_then)
        for other in [p for p, (sent, _) in self.pings.items() if sent <= sent_then]:
            del self.pings[other]
        return True

    def on_bare_pong(self) -> None:
        """A pong without the ping's id, as graphql-transport-ws allows: the client is alive, so its oldest
        ping counts as answered, but no byte is acknowledged. A client that never echoes an id is
        therefore closed once ``WS_MAX_BUFFERED_BYTES`` are unacknowledged, as a reader that stopped
        reading is (a blind stream of bare pongs must not keep the slow-reader attack open)."""
        if self.pings:
            del self.pings[min(self.pings, key=lambda p: self.pings[p][1])]

    def oldest_unanswered(self) -> float | None:
        """When the oldest outstanding ping was sent (monotonic), or None."""
        return min((at for _, at in self.pings.values()), default=None)


class TokenBucket:
    """``rate`` messages a second, in bursts of up to as many (a fixed one-second window closed 7 of 10
    clients sending 80 frames a second in bursts: two bursts could fall in one window)."""

    __slots__ = ("refilled", "tokens")

    def __init__(self, rate: float) -> None:
        self.tokens, self.refilled = float(rate), time.monotonic()

    def take(self, cost: float, rate: float) -> bool:
        """Take ``cost`` (refilled at ``rate``, read live); False when the bucket is overdrawn."""
        now = time.monotonic()
        self.tokens = min(float(rate), self.tokens + (now - self.refilled) * rate) - cost
        self.refilled = now
        return self.tokens >= 0.0
