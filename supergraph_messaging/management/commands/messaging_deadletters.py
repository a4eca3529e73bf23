"""``manage.py messaging_deadletters list|show|replay|discard``: the durable events handlers gave up on.

    manage.py messaging_deadletters list [--channel C]
    manage.py messaging_deadletters show ID [--channel C]
    manage.py messaging_deadletters replay (ID ... | --channel C | --all) [--group G] [--dry-run]
    manage.py messaging_deadletters discard (ID ... | --channel C | --all) [--dry-run]

Replay puts each entry back into the consumer group that gave up on it,
with its event id (``once=True`` handlers stay exactly-once); see
:mod:`supergraph_messaging.operations.dead_letters`. Each replay and
discard is logged at WARNING on ``supergraph_messaging.deadletters``.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from supergraph_messaging.operations import dead_letters
from supergraph_messaging.operations.dead_letters import DeadLetter, DeadLetterError
from supergraph_messaging.redis.client import get_redis_client
from supergraph_messaging.redis.errors import REDIS_ERRORS

BY = "manage.py messaging_deadletters"


class Command(BaseCommand):
    help = "List, show, replay or discard dead letters (durable events whose handler kept failing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("list", "show", "replay", "discard"))
        parser.add_argument("ids", nargs="*", help="Dead-letter ids (as `list` prints them).")
        parser.add_argument("--channel", default=None, help="Only this channel's dead letters.")
        parser.add_argument("--all", action="store_true", dest="everything",
                            help="replay/discard: every dead letter of every channel.")
        parser.add_argument("--group", default=None,
                            help="replay: the consumer group, for dead letters that do not record one.")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be done; change nothing.")
        parser.add_argument("--limit", type=int, default=dead_letters.LIMIT, help="At most this many.")

    def handle(self, *args: Any, **options: Any) -> None:
        conn = get_redis_client().redis
        try:
            getattr(self, "_" + options["action"])(conn, options)
        except DeadLetterError as exc:
            raise CommandError(str(exc)) from exc
        except REDIS_ERRORS as exc:
            raise CommandError(f"Redis at {get_redis_client().masked_url} is unreachable: {exc}") from exc

    def _list(self, conn: Any, options: dict[str, Any]) -> None:
        if options["ids"]:
            raise CommandError("list takes no ids; use show.")
        found = dead_letters.select(conn, channel=options["channel"], everything=True, limit=options["limit"])
        if not found:
            self.stdout.write("No dead letters.")
            return
        for letter in found:
            self.stdout.write(f"{letter.channel}  {letter.id}  event {letter.event_id}  group "
                              f"{letter.group or '(unknown)'}  {letter.size} B  {letter.reason[:120]}")
        self.stdout.write(f"{len(found)} dead letter(s).")

    def _show(self, conn: Any, options: dict[str, Any]) -> None:
        if not options["ids"]:
            raise CommandError("show needs a dead-letter id.")
        for letter in dead_letters.select(conn, options["ids"], channel=options["channel"]):
            data = letter.data if isinstance(letter.data, str) else json.dumps(letter.data, indent=2)
            self.stdout.write(f"channel: {letter.channel}\nid: {letter.id}\nentry: {letter.entry}\n"
                              f"event id: {letter.event_id}\ngroup: {letter.group or '(unknown)'}\n"
                              f"reason: {letter.reason}\ndata:\n{textwrap.indent(data, '  ')}")

    def _chosen(self, conn: Any, options: dict[str, Any]) -> list[DeadLetter]:
        return dead_letters.select(conn, options["ids"], channel=options["channel"],
                                   everything=options["everything"], limit=options["limit"])

    def _replay(self, conn: Any, options: dict[str, Any]) -> None:
        chosen, failed = self._chosen(conn, options), 0
        for letter in chosen:
            group = options["group"] or letter.group
            if options["dry_run"]:
                self.stdout.write(f"Would replay {letter.id} of {letter.channel} (event {letter.event_id}) to "
                                  f"group {group or '(unknown: give --group)'}.")
                continue
            try:
                consumer = dead_letters.replay(conn, letter, options["group"], by=BY)
            except DeadLetterError as exc:
                failed += 1
                self.stderr.write(str(exc))
                continue
            self.stdout.write(f"Replayed {letter.id} of {letter.channel} (event {letter.event_id}) to group "
                              f"{group}, consumer {consumer}.")
        self._summary("replay", len(chosen), failed, options["dry_run"])

    def _discard(self, conn: Any, options: dict[str, Any]) -> None:
        chosen, failed = self._chosen(conn, options), 0
        for letter in chosen:
            if options["dry_run"]:
                self.stdout.write(f"Would discard {letter.id} of {letter.channel} (event {letter.event_id}).")
            elif dead_letters.discard(conn, letter, by=BY):
                self.stdout.write(f"Discarded {letter.id} of {letter.channel} (event {letter.event_id}).")
            else:
                failed += 1
                self.stderr.write(f"Dead letter {letter.id} of {letter.channel} was gone already.")
        self._summary("discard", len(chosen), failed, options["dry_run"])

    def _summary(self, verb: str, chosen: int, failed: int, dry_run: bool) -> None:
        if dry_run:
            self.stdout.write(f"Dry run: {chosen} dead letter(s) would {verb}; nothing changed.")
            return
        self.stdout.write(f"{verb.capitalize()}ed {chosen - failed} of {chosen} dead letter(s).")
        if failed:
            raise CommandError(f"{failed} dead letter(s) could not {verb}; see above.")
