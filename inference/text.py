"""Token ids in, exact text deltas out.

The deltas of a reply, joined, must equal ``tokenizer.decode(all_ids, skip_special_tokens=True)``
byte for byte (a NUL shown as U+FFFD) — including multi-byte characters (CJK, emoji) that a
byte-level tokenizer spreads over several tokens. We decode a short window of recent tokens
(the prefix/read-offset scheme text-generation-inference uses), emit only text that has stopped
changing, hold back a trailing U+FFFD (an incomplete UTF-8 sequence), and reconcile against the
full decode at the end.

Stop strings are handled on text, not tokens: text that might be the start of a stop string is
held back until it either completes the stop (the reply ends before it) or cannot any more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"


class TextAssembler:
    def __init__(self, tokenizer: Any, *, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.decoded = ""  # text decoded and released by the detokenizer
        self.pending = ""  # released text held back because it may start a stop string
        self.emitted = ""  # text handed to the caller
        self.stopped = False

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token: int) -> str:
        """Take one generated token; return the text that is now safe to show (maybe "")."""
        if self.stopped:
            return ""
        self.ids.append(token)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            released = new_text[len(prefix_text) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            self.decoded += released
            return self._release(released)
        return ""

    def _release(self, text: str) -> str:
        """Apply stop strings to newly decoded text; return what may be shown now."""
        # A decoded NUL could never be saved (PostgreSQL refuses it in text): one U+FFFD for
        # one NUL, so the offsets of the streamed deltas and the saved text still agree.
        self.pending += text.replace("\x00", REPLACEMENT)
        if not self.stop:
            out, self.pending = self.pending, ""
            self.emitted += out
            return out
        cut = min((i for i in (self.pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out = self.pending[:cut]
            self.pending = ""
            self.stopped = True
        else:
            hold = self._stop_prefix_len(self.pending)
            out = self.pending[: len(self.pending) - hold]
            self.pending = self.pending[len(self.pending) - hold :]
        self.emitted += out
        return out

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def finish(self) -> str:
        """The end of the reply: release what was held back, reconciled with a full decode."""
        if self.stopped:
            return ""
        full = self._decode(self.ids)
        if full.startswith(self.decoded):
            rest = full[len(self.decoded) :]
        else:  # pragma: no cover - a tokenizer whose decode is not prefix-stable
            logger.warning("incremental decode diverged from the full decode; sending the rest")
            rest = full[len(self.decoded) :] if len(full) > len(self.decoded) else ""
        self.decoded += rest
        out = self._release(rest)
        if not self.stopped and self.pending:
            out += self.pending
            self.emitted += self.pending
            self.pending = ""
        return out
