"""Reading an uploaded file safely: its JSON (a plain file, or the one member of a ZIP that
matters), as a stream, checked before anything is built from it.

Nothing here holds the file whole. Each pass opens a fresh stream that counts what it hands
out: past the limit it stops (a ZIP whose member inflates without end, whatever its header
claims). The first pass (``scan``) reads every byte: UTF-8, JSON syntax, nesting depth (a
deep file would otherwise cost the parser memory quadratic in its depth), and the file's
outline (a list or an object, the keys it starts with, how many conversations); only then
does the second pass (``items``) build conversations, one at a time.
"""

from __future__ import annotations

import codecs
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import ijson
from django.utils.translation import gettext as _

from portability.importers.common import MAX_CONVERSATIONS, MAX_DEPTH, ImportRefused

CHUNK = 64 * 1024
MAX_ZIP_MEMBERS = 20_000
JSON_NAME = "conversations.json"
OPENERS = ("start_map", "start_array")
CLOSERS = ("end_map", "end_array")


def _mb(size: int) -> str:
    return f"{size / 1_000_000:,.1f}".rstrip("0").rstrip(".")


@dataclass
class Source:
    """The JSON to read: ``open()`` gives a fresh binary stream of it for each pass."""

    open: Callable[[], IO[bytes]]
    name: str  # "conversations.json in the ZIP", or the file's own name
    limit: int  # bytes of JSON read at most
    zipped: bool = False


@dataclass
class Outline:
    """What the first pass saw: the top-level value's kind and, for an object, its scalar
    fields; the conversations counted; the first conversation's keys (to tell the format)."""

    kind: str  # "list", "object" or the JSON type of a scalar ("number", "string", ...)
    fields: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    conversations_kind: str = ""  # an object's "conversations": "list", "object", ...
    keys: set[str] = field(default_factory=set)  # a top-level object's first keys
    first_keys: set[str] = field(default_factory=set)
    first_kind: str = ""  # the first conversation's kind ("object", "string", ...)


class _Checked:
    """A read-only stream that refuses past ``limit`` bytes and, if asked, anything that is
    not UTF-8 (where in the file it breaks, counted in bytes)."""

    def __init__(self, raw: IO[bytes], *, limit: int, name: str, utf8: bool, zipped: bool) -> None:
        self.raw, self.limit, self.name, self.zipped = raw, limit, name, zipped
        self.count = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")() if utf8 else None
        self.first = True

    def read(self, size: int = CHUNK) -> bytes:
        if size == 0:
            return b""
        try:
            chunk = self.raw.read(CHUNK if size < 0 else min(size, CHUNK))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):  # e.g. a wrong CRC
            if not self.zipped:
                raise
            raise ImportRefused(_("The ZIP file is damaged or incomplete.")) from None
        if self.first:
            self.first = False
            chunk = self._start(chunk)
        self.count += len(chunk)
        if self.count > self.limit:
            raise ImportRefused(too_big(self.name, self.limit, zipped=self.zipped))
        if self.decoder is not None:
            try:
                self.decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                where = self.count - len(chunk) + exc.start
                raise ImportRefused(
                    _(
                        "%(name)s is not UTF-8 text (byte %(byte)s at position %(position)d): "
                        "save it as UTF-8 and try again."
                    )
                    % {"name": self.name, "byte": f"0x{chunk[exc.start]:02X}", "position": where}
                ) from None
        return chunk

    def _start(self, chunk: bytes) -> bytes:
        """The first bytes: a UTF-8 byte order mark is dropped; UTF-16 and UTF-32 (with a
        mark, or JSON's first characters padded with zero bytes) are named as such."""
        if chunk.startswith(codecs.BOM_UTF8):
            return chunk[len(codecs.BOM_UTF8) :]
        head = chunk[:4]
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)) or (
            len(head) == 4 and head.count(0) == 3
        ):
            raise ImportRefused(self._not_utf8("UTF-32"))
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head[:2]:
            raise ImportRefused(self._not_utf8("UTF-16"))
        return chunk

    def _not_utf8(self, encoding: str) -> str:
        return _("%(name)s is %(encoding)s text, not UTF-8: save it as UTF-8 and try again.") % {
            "name": self.name,
            "encoding": encoding,
        }


def open_upload(upload: Any, *, filename: str, limit: int, zip_limit: int) -> Source:
    """The JSON of an upload, told apart by its first bytes (never by its name): a ZIP (the
    ChatGPT export as downloaded, or ours), whose JSON may unpack to ``zip_limit`` bytes, or
    JSON itself, of at most ``limit``."""
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    if not head:
        raise ImportRefused(_("The file is empty."))
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_source(upload, limit=zip_limit)

    def reopen() -> IO[bytes]:
        upload.seek(0)
        return upload  # type: ignore[no-any-return]

    return Source(open=reopen, name=filename, limit=limit)


def _zip_source(upload: Any, *, limit: int) -> Source:
    """The conversations file of a ZIP, after checking the whole directory: no member may
    point outside the archive (absolute or ``..``), the directory must be of a sane size,
    and the member's declared size must be within the limit (its real size is counted while
    reading, whatever the header says)."""
    _check_member_count(upload)
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ImportRefused(_("The ZIP file is damaged or incomplete.")) from None
    infos = archive.infolist()
    for info in infos:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":"):
            raise ImportRefused(
                _("The ZIP holds a file whose path leads outside it (%(path)s): not imported.")
                % {"path": info.filename[:120]}
            )
    candidates = [i for i in infos if not i.is_dir() and i.filename.rsplit("/", 1)[-1] == JSON_NAME]
    if not candidates:
        candidates = [i for i in infos if not i.is_dir() and i.filename.lower().endswith(".json")]
        if len(candidates) != 1:
            raise ImportRefused(
                _("The ZIP holds no %(name)s (the file with the conversations).")
                % {"name": JSON_NAME}
            )
    info = min(candidates, key=lambda i: i.filename.count("/"))
    name = _("%(member)s in the ZIP") % {"member": info.filename[:120]}
    if info.flag_bits & 0x1:
        raise ImportRefused(_("The ZIP is protected by a password: export it again without one."))
    if info.file_size > limit:
        raise ImportRefused(too_big(name, limit, zipped=True))

    def reopen() -> IO[bytes]:
        try:
            return archive.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError):
            raise ImportRefused(_("The ZIP file is damaged or incomplete.")) from None

    return Source(open=reopen, name=name, limit=limit, zipped=True)


def too_big(name: str, limit: int, *, zipped: bool) -> str:
    if zipped:
        return _("%(name)s is larger than %(limit)s MB once unpacked: it is not imported.") % {
            "name": name,
            "limit": _mb(limit),
        }
    return _("%(name)s is larger than %(limit)s MB: it is not imported.") % {
        "name": name,
        "limit": _mb(limit),
    }


def _check_member_count(upload: Any) -> None:
    """Refuse a ZIP listing more members than any export has, before ``zipfile`` builds an
    object for each of them (its end record says how many there are)."""
    upload.seek(0, 2)
    size = upload.tell()
    upload.seek(max(0, size - (65_536 + 22)))
    tail = upload.read()
    upload.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        raise ImportRefused(_("The ZIP file is damaged or incomplete."))
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if entries > MAX_ZIP_MEMBERS:  # 0xFFFF (ZIP64's "more than fits here") included
        raise ImportRefused(
            _("The ZIP holds more than %(count)s files: it is not an export this server reads.")
            % {"count": f"{MAX_ZIP_MEMBERS:,}"}
        )


def _reader(source: Source, *, utf8: bool) -> _Checked:
    return _Checked(
        source.open(), limit=source.limit, name=source.name, utf8=utf8, zipped=source.zipped
    )


def _json_error(source: Source, exc: Exception) -> ImportRefused:
    text = str(exc).lower()
    if "premature eof" in text:
        detail = _("it ends too early, as if cut off")
    elif "trailing garbage" in text:
        detail = _("something follows the end of the JSON")
    elif "overflow" in text:
        detail = _("a number in it is too large")
    else:
        detail = str(exc).splitlines()[0][:100]
    return ImportRefused(
        _("%(name)s is not valid JSON (%(detail)s).") % {"name": source.name, "detail": detail}
    )


def scan(source: Source) -> Outline:
    """The first pass: every byte read and checked, the outline kept. Refuses what is not
    UTF-8, not JSON, nested deeper than MAX_DEPTH or holding more than MAX_CONVERSATIONS.

    It sees every token of the file, so its loop is kept lean: the common case (a key or a
    value inside a conversation) costs two comparisons."""
    outline: Outline | None = None
    depth = 0
    key: str | None = None  # the current key of a top-level object
    elem = -1  # the depth of the conversations' own values, inside their list (-1: none)
    first_keys = -1  # the depth of the first conversation's keys, while it is being read
    stream = _reader(source, utf8=True)
    try:
        for event, value in ijson.basic_parse(stream, use_float=True):
            if event == "map_key":
                if depth == first_keys and len(outline.first_keys) < 100:  # type: ignore[union-attr]
                    outline.first_keys.add(value)  # type: ignore[union-attr]
                elif depth == 1:
                    key = value
                    if len(outline.keys) < 100:  # type: ignore[union-attr]
                        outline.keys.add(value)  # type: ignore[union-attr]
            elif event == "start_map" or event == "start_array":
                kind = "object" if event == "start_map" else "list"
                if outline is None:
                    outline = Outline(kind=kind)
                    elem = 1 if kind == "list" else -1
                elif depth == elem:
                    _count(outline, kind, source)
                    first_keys = elem + 1 if outline.count == 1 else -1
                elif depth == 1 and key == "conversations":
                    outline.conversations_kind = kind
                    elem = 2 if kind == "list" else -1
                depth += 1
                if depth > MAX_DEPTH:
                    raise ImportRefused(
                        _("%(name)s is nested more than %(depth)d levels deep: not an export.")
                        % {"name": source.name, "depth": MAX_DEPTH}
                    )
            elif event == "end_map" or event == "end_array":
                depth -= 1
                if depth == elem:
                    first_keys = -1  # past the first conversation
                elif elem == 2 and depth == 1:  # the end of an export's "conversations"
                    elem = -1
            elif outline is None:
                outline = Outline(kind=_kind(event))
            elif depth == elem:
                _count(outline, _kind(event), source)
            elif depth == 1 and key is not None:
                outline.fields[key] = value
                if key == "conversations":
                    outline.conversations_kind = _kind(event)
    except ijson.JSONError as exc:
        raise _json_error(source, exc) from None
    if outline is None:
        raise ImportRefused(_("The file is empty."))
    return outline


def _count(outline: Outline, kind: str, source: Source) -> None:
    outline.count += 1
    if outline.count == 1:
        outline.first_kind = kind
    if outline.count > MAX_CONVERSATIONS:
        raise ImportRefused(
            _("%(name)s holds more than %(count)s conversations: split it and import each part.")
            % {"name": source.name, "count": f"{MAX_CONVERSATIONS:,}"}
        )


def _kind(event: str) -> str:
    if event == "null":
        return "null"
    if event == "boolean":
        return "boolean"
    if event == "number":
        return "number"
    if event == "string":
        return "string"
    return "object" if event == "start_map" else "list"


def items(source: Source, prefix: str) -> Iterator[Any]:
    """The second pass: each value at ``prefix`` ("item": the file's list; "": the file's
    one object; "conversations.item": our export's list), built one at a time."""
    stream = _reader(source, utf8=False)  # the first pass checked the encoding
    try:
        yield from ijson.items(stream, prefix, use_float=True)
    except ijson.JSONError as exc:  # the file changed between the passes
        raise _json_error(source, exc) from None
