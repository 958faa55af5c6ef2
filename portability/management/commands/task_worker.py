"""``manage.py task_worker``: the task queue's worker as a process of its own (Compose's
``tasks`` service). django-tasks-db's ``db_worker`` loop, plus what an import needs around it:
stalled imports resumed, and a stop that lets an import hand over between two conversations
(portability/tasks.py)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portability import tasks


class Command(BaseCommand):
    help = "Run the background task queue (imports): until SIGTERM, or --until-idle."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval", type=float, default=1.0, help="seconds between looks at an empty queue"
        )
        parser.add_argument(
            "--until-idle", action="store_true", help="run what is queued, then exit"
        )
        parser.add_argument(
            "--stall-seconds",
            type=float,
            default=tasks.STALL_SECONDS,
            help="how long a running import may stay silent before it is taken over",
        )
        parser.add_argument(
            "--sweep-seconds",
            type=float,
            default=tasks.SWEEP_SECONDS,
            help="how often to look for such imports",
        )

    def handle(
        self,
        *args: Any,
        interval: float,
        until_idle: bool,
        stall_seconds: float,
        sweep_seconds: float,
        **options: Any,
    ) -> None:
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if stop.is_set():  # a second signal: now
                self.stderr.write("task worker: stopping now")
                sys.exit(1)
            self.stdout.write("task worker: stopping after the conversation in hand")
            tasks.request_stop(stop)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        name = tasks.worker_name()
        self.stdout.write(f"task worker {name}: running the queue's tasks")
        self.stdout.flush()
        tasks.work(
            stop=stop,
            name=name,
            interval=interval,
            until_idle=until_idle,
            stall_seconds=stall_seconds,
            sweep_seconds=sweep_seconds,
        )
