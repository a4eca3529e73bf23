"""``manage.py messaging_outbox``: the outbox backlog, and a relay round on demand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from supergraph_messaging.delivery import outbox


class Command(BaseCommand):
    help = "Show the outbox backlog (unrelayed events, oldest age); --relay relays it now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=None, help="The database whose outbox to read.")
        parser.add_argument("--relay", action="store_true", help="Relay every unrelayed event now.")

    def handle(self, *args: Any, **options: Any) -> None:
        db = options["database"]
        if options["relay"]:
            self.stdout.write(f"Relayed {outbox.relay_all(db)} event(s).")
        count, age = outbox.backlog(db)
        oldest = "none" if age is None else f"{age:.1f} s"
        self.stdout.write(f"Unrelayed events: {count}; oldest: {oldest}.")
