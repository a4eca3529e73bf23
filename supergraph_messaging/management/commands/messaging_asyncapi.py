"""``manage.py messaging_asyncapi > asyncapi.json``: the AsyncAPI 3.0 document, for docs and code generators."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from supergraph_messaging.gateway.asyncapi import document


class Command(BaseCommand):
    help = "Print the project's AsyncAPI 3.0 document (events published, consumed, and served at /subscribe)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="localhost",
                            help="host[:port] of the WebSocket server in the document (default: localhost)")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(document(options["host"]), indent=2))
