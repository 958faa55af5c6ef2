"""Importing conversations from other chat apps and from our own export.

``prepare`` takes an uploaded file and either refuses it whole (``ImportRefused``, with a
message naming the problem) or returns it normalized, ready to be written one conversation
at a time by the task queue (portability/tasks.py). It touches no database: the web request
runs it on a thread of its own.

One module per format (``chatgpt``, ``openwebui``, ``stellarchat``), each turning one
conversation of its file into the common normalized form (``common``); ``reading`` opens and
checks the file. The format is told from the content, never from the file's name.
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.utils.translation import gettext as _

from portability.importers import chatgpt, openwebui, reading, stellarchat
from portability.importers.common import ImportRefused

__all__ = ["ImportRefused", "Prepared", "prepare", "upload_limit"]

# The JSON inside a ZIP may unpack to this many times the upload limit (text compresses
# 5-10 times); a member claiming or reaching more is a ZIP bomb as far as we are concerned.
ZIP_EXPANSION = 4
FORMATS: dict[str, Any] = {
    chatgpt.KIND: chatgpt,
    openwebui.KIND: openwebui,
    stellarchat.KIND: stellarchat,
}


def upload_limit() -> int:
    """The largest file taken, in bytes (STELLARCHAT_IMPORT_MAX_MB, in millions of bytes)."""
    return int(settings.STELLARCHAT_IMPORT_MAX_MB) * 1_000_000


@dataclass
class Prepared:
    """A file that passed every check: its conversations normalized, waiting in a temporary
    file (each as compressed JSON, in file order), and those already known to be skipped."""

    format: str
    filename: str
    total: int
    spool: IO[bytes]
    count: int = 0
    skips: list[tuple[str, str]] = field(default_factory=list)  # (reason code, title)

    def add(self, conversation: dict[str, Any]) -> None:
        self.spool.write(pack(conversation))
        self.count += 1

    def items(self) -> Iterator[tuple[int, bytes]]:
        """(place among those to write, the conversation as ``pack`` made it), in order."""
        self.spool.seek(0)
        for index in range(self.count):
            (size,) = _SIZE.unpack(self.spool.read(_SIZE.size))
            yield index, self.spool.read(size)

    def close(self) -> None:
        self.spool.close()


def prepare(upload: Any, *, filename: str) -> Prepared:
    """Check the whole file and normalize it; ``ImportRefused`` names what is wrong."""
    limit = upload_limit()
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        raise ImportRefused(too_big_message(size))
    source = reading.open_upload(
        upload, filename=filename, limit=limit, zip_limit=limit * ZIP_EXPANSION
    )
    outline = reading.scan(source)
    kind, prefix, total = _detect(outline, source.name)
    module = FORMATS[kind]
    prepared = Prepared(
        format=kind,
        filename=filename,
        total=total,
        spool=tempfile.TemporaryFile(),  # noqa: SIM115 - the caller closes it
    )
    try:
        for index, raw in enumerate(reading.items(source, prefix)):
            conversation = module.normalize(raw, index)
            if conversation["skip"]:
                prepared.skips.append((conversation["skip"], conversation["title"]))
                continue
            prepared.add(conversation)
    except BaseException:
        prepared.close()
        raise
    return prepared


_SIZE = struct.Struct("<I")


def pack(conversation: dict[str, Any]) -> bytes:
    """A normalized conversation as stored until it is written: compact JSON, compressed
    (about a fifth of the size), behind its length."""
    data = zlib.compress(json.dumps(conversation, separators=(",", ":")).encode("utf-8"), 3)
    return _SIZE.pack(len(data)) + data


def unpack(data: bytes) -> dict[str, Any]:
    """A conversation stored by ``pack`` (without its length)."""
    return json.loads(zlib.decompress(data))  # type: ignore[no-any-return]


def too_big_message(size: int | None = None) -> str:
    limit = settings.STELLARCHAT_IMPORT_MAX_MB
    if size is None:
        return _("The file is larger than %(limit)d MB, the most this server takes.") % {
            "limit": limit
        }
    return _("The file is %(size)s MB; the most this server takes is %(limit)d MB.") % {
        "size": f"{size / 1_000_000:,.1f}",
        "limit": limit,
    }


def _kind_name(kind: str) -> str:
    names = {
        "number": _("a number"),
        "string": _("a string"),
        "boolean": _("true or false"),
        "null": _("null"),
        "list": _("a list"),
        "object": _("an object"),
    }
    return names.get(kind, kind)


def _detect(outline: reading.Outline, name: str) -> tuple[str, str, int]:
    """(format, where its conversations are, how many) from the file's outline."""
    unknown = _(
        "%(name)s is not an export this server reads: it takes ChatGPT's conversations.json "
        "(or its ZIP), an Open WebUI chat export and StellarChat's own export."
    ) % {"name": name}
    if outline.kind == "object":
        declared = outline.fields.get("format")
        if declared == stellarchat.FORMAT:
            stellarchat.check_header(outline.fields, name=name)
            if outline.conversations_kind != "list":
                raise ImportRefused(_("%(name)s has no list of “conversations”.") % {"name": name})
            return _nonempty(stellarchat.KIND, "conversations.item", outline.count, name)
        if declared is not None:
            raise ImportRefused(unknown)
        for module in (chatgpt, openwebui):  # one conversation on its own
            if module.matches(outline.keys):
                return module.KIND, "", 1
        raise ImportRefused(unknown)
    if outline.kind != "list":
        raise ImportRefused(
            _("%(name)s holds %(kind)s, not conversations.")
            % {"name": name, "kind": _kind_name(outline.kind)}
        )
    if outline.count and outline.first_kind != "object":
        raise ImportRefused(
            _("%(name)s is a list of which the first item is %(kind)s, not a conversation.")
            % {"name": name, "kind": _kind_name(outline.first_kind)}
        )
    for module in (chatgpt, openwebui):
        if outline.count and module.matches(outline.first_keys):
            return module.KIND, "item", outline.count
    if not outline.count:
        raise ImportRefused(_("%(name)s holds no conversations.") % {"name": name})
    raise ImportRefused(unknown)


def _nonempty(kind: str, prefix: str, count: int, name: str) -> tuple[str, str, int]:
    if not count:
        raise ImportRefused(_("%(name)s holds no conversations.") % {"name": name})
    return kind, prefix, count
