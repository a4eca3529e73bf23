"""Events from data changes: ``EventConfig``, model signals, DRF ViewSets, published after the commit."""

from __future__ import annotations

from supergraph_messaging.delivery.pipelined import counters
from supergraph_messaging.events.config import EventConfig
from supergraph_messaging.events.model_signals import register_model_events
from supergraph_messaging.events.publishing import flush_events, publish_event, publish_on_commit

__all__ = ["EventConfig", "counters", "flush_events", "publish_event", "publish_on_commit", "register_model_events"]
