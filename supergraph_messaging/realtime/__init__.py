"""Live WebSocket subscriptions: ``Subscription`` declarations, the per-process hub, the consumer and its
protocol, and how a connection is authenticated."""

from __future__ import annotations

from supergraph_messaging.realtime.subscriptions import Subscription

__all__ = ["Subscription"]
