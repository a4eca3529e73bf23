"""The baseline of bench_fanout: channels-redis used the usual way.

``RedisPubSubChannelLayer``, ``group_add`` per subscription, ``group_send``
per event, the consumer wrapping each event in the same ``next`` frame.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ["BENCH_REDIS_URL"]]},
        }},
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

GROUP = "camera.events"


class BaselineConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.subs: list[str] = []
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = json.loads(text_data or "{}")
        if message.get("type") == "connection_init":
            await self.send(json.dumps({"type": "connection_ack", "payload": {}}))
        elif message.get("type") == "subscribe":
            self.subs.append(message["id"])
            await self.channel_layer.group_add(GROUP, self.channel_name)
            await self.send(json.dumps({"id": message["id"], "type": "subscribed",
                                        "payload": {"entity": "CameraEvents"}}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def camera_event(self, event: dict[str, Any]) -> None:
        for sub_id in self.subs:
            await self.send(text_data=json.dumps({"id": sub_id, "type": "next", "payload": {
                "entity": "CameraEvents", "channel": GROUP, "data": event["data"]}}))


application = ProtocolTypeRouter({"websocket": URLRouter([path("subscribe", BaselineConsumer.as_asgi())])})
