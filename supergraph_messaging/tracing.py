"""OpenTelemetry spans across services (the ``[otel]`` extra): a change's trace, from its write to its handlers.

Without ``opentelemetry-api``, or with it but no SDK tracer provider
configured (the API's default), every function here does nothing and the
hot paths pay one flag check. With a provider (configure it before Django
starts: in ``settings.py``, ``asgi.py`` or with ``opentelemetry-instrument``):

- publishing an event opens a ``<channel> publish`` span (PRODUCER), a child
  of the current one (the request's, with Django's instrumentation), and
  puts its W3C ``traceparent`` in the event's ``_meta``; it travels in the
  outbox row, the stream entry and the Pub/Sub message;
- the outbox relay (``<channel> relay``), each handler (``<channel>
  process``, with the handler's name) and the WebSocket hub (``<channel>
  deliver``, once per event, with the number of subscriptions reached) open
  spans that are its children, in whichever process they run: one write
  is one trace.

A ``traceparent`` read from a message is bounded (128 characters) and
parsed by OpenTelemetry's propagator; a malformed one starts no trace.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

KINDS = {"producer": "PRODUCER", "consumer": "CONSUMER", "internal": "INTERNAL"}
MAX_TRACEPARENT = 128


def active() -> bool:
    """Whether spans are recorded: an SDK tracer provider is configured. Whoever configured one imported
    ``opentelemetry.trace``; this never imports it (its entry points cost a process 0.3 s at start)."""
    trace = sys.modules.get("opentelemetry.trace")
    return trace is not None and not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("supergraph_messaging")


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return getattr(SpanKind, KINDS[kind])


def parent(meta: Any) -> Any:
    """The context a message's ``_meta.traceparent`` names (None: none, or not a valid one)."""
    traceparent = meta.get("traceparent") if isinstance(meta, dict) else None
    if not isinstance(traceparent, str) or len(traceparent) > MAX_TRACEPARENT:
        return None
    from opentelemetry import propagate

    return propagate.extract({"traceparent": traceparent})


@contextlib.contextmanager
def span(name: str, meta: Any = None, kind: str = "internal", **attributes: Any) -> Iterator[Any]:
    """A span named ``name``, the child of ``meta``'s traceparent (else of the current span); no-op
    unless :func:`active`."""
    if not active():
        yield None
        return
    with _tracer().start_as_current_span(name, context=parent(meta), kind=_kind(kind),
                                         attributes={k: v for k, v in attributes.items() if v is not None}) as s:
        yield s


def published(channel: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its ``_meta.traceparent`` set to a ``<channel> publish`` span's (a copy: the caller's
    dict is not changed); ``payload`` itself unless :func:`active`."""
    if not active():
        return payload
    from opentelemetry import propagate

    with span(f"{channel} publish", None, "producer", **{"messaging.destination.name": channel}):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    if "traceparent" not in carrier:
        return payload
    meta = payload.get("_meta")
    return {**payload, "_meta": {**(meta if isinstance(meta, dict) else {}), "traceparent": carrier["traceparent"]}}


def traced(func: Any, name: str, is_async: bool) -> Any:
    """``func`` (a handler named ``name``) inside a ``<channel> process`` span, the child of its message's
    traceparent; called as ``func`` is (the channel, when it wants it, names the span; else the event's
    ``_meta.event``). ``func`` itself when it is marked ``untraced`` (the WebSocket hub's, which has its own)."""
    if getattr(func, "untraced", False):
        return func

    def opened(args: tuple[Any, ...]) -> Any:
        meta = args[0].get("_meta") if isinstance(args[0], dict) else None
        channel = args[1] if len(args) > 1 else (meta.get("event") if isinstance(meta, dict) else None)
        return span(f"{channel or name} process", meta, "consumer",
                    **{"messaging.destination.name": channel, "code.function": name})

    if is_async:
        async def handler(*args: Any) -> Any:
            with opened(args):
                return await func(*args)
    else:
        def handler(*args: Any) -> Any:  # type: ignore[misc]
            with opened(args):
                return func(*args)
    return handler


def ended(name: str, meta: Any, start_ns: int, end_ns: int, **attributes: Any) -> None:
    """Record a span that already happened (the relay's, per row of a batch appended at once)."""
    if not active():
        return
    s = _tracer().start_span(name, context=parent(meta), kind=_kind("producer"), start_time=start_ns,
                             attributes={k: v for k, v in attributes.items() if v is not None})
    s.end(end_time=end_ns)
