"""``runworker`` with StellarChat's worker: channels' worker plus the reply sweeper and an
eager model load (a worker process exists to generate, so it loads at start, not at import)."""

from __future__ import annotations

from channels.management.commands.runworker import Command as ChannelsRunworker
from django.core.management.base import CommandError

from inference.worker import InferenceWorker, embedded


class Command(ChannelsRunworker):
    worker_class = InferenceWorker

    def handle(self, *args: object, **options: object) -> None:
        if embedded():
            raise CommandError(
                "runworker needs a shared channel layer: set REDIS_URL (without it, inference "
                "runs inside the web process and no separate worker is needed)"
            )
        if options.get("channels") == ["inference"]:  # every model it serves, on its channel
            from inference import registry

            options["channels"] = registry.worker_channels()
        super().handle(*args, **options)
