"""Message boundaries of one direction of a PPTP control stream, sans-IO.

RFC 2637 frames control messages by their Length field only (section 1.4), and TCP cuts
the stream wherever it likes. Every field the ALG reads or rewrites lies in a message's
first 17 bytes (Call ID and Peer's Call ID at 12-15, the result code at 16; section 2),
the *decision bytes*. :class:`PptpFramer` takes the stream's in-order bytes and hands
back, in the manner of h11's ``next_event``:

* :class:`Release`: bytes that may leave now, already rewritten where needed;
* :class:`Decide`: a message whose decision bytes are all in. The caller translates it
  and gives the result to :meth:`PptpFramer.decided`; until then the framer releases
  nothing more.

The validated 12-byte header of a message is released at once; bytes 12-16 are held
until all of them are in, then released translated with whatever else has arrived; the
rest of the body passes as it comes and the whole message is validated when its last
byte arrives. So no Call ID leaves untranslated, and a sender that waits for
acknowledgements keeps going. A message that fails validation raises
:class:`~alg.errors.CodecError`; the stream cannot be resynchronised after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from alg.codec import HEADER_LENGTH, parse_header, parse_message

DECISION_LENGTH = 17
"""Bytes of a message that decide its translation: header, bytes 12-15, result code."""


@dataclass(frozen=True, slots=True)
class Release:
    """Bytes that may be forwarded now."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Decide:
    """A message whose decision bytes are in.

    Attributes:
        head: the message's first bytes (at least :data:`DECISION_LENGTH`, or the whole
            message if shorter), padded with zeros to the message's length, so that a
            codec can parse it.
    """

    head: bytes


FramerEvent = Release | Decide


class PptpFramer:
    """One direction's control messages, cut at their boundaries."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._length = 0
        self._original = bytearray()
        self._prefix: bytes | None = None
        self._awaiting = False

    @property
    def held(self) -> int:
        """Bytes taken in and not released yet."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """True at a message boundary with nothing held."""
        return not self._pending and not self._length

    def feed(self, data: bytes) -> None:
        """Take the next in-order bytes of the stream."""
        self._pending += data

    def next_event(self) -> FramerEvent | None:
        """What the caller must do next, or None when the framer needs more bytes.

        Raises:
            CodecError: the current message is invalid (header or, at its last byte,
                the whole message).
            AssertionError: called again while a :class:`Decide` is unanswered (a bug of
                the caller, not of the peer).
        """
        if self._awaiting:
            raise AssertionError("the previous message awaits its translation")
        out = bytearray()
        while self._pending:
            if not self._length:
                if len(self._pending) < HEADER_LENGTH:
                    break
                self._length, _ = parse_header(bytes(self._pending[:HEADER_LENGTH]))
            need = min(DECISION_LENGTH, self._length)
            if self._prefix is None:
                have = len(self._original)
                if have + len(self._pending) < need:
                    out += self._take(HEADER_LENGTH - have)
                    break
                if out:
                    break
                head = bytes(self._original) + bytes(self._pending[: need - have])
                self._awaiting = True
                return Decide(head + bytes(self._length - need))
            start = len(self._original)
            chunk = bytearray(self._take(self._length - start))
            patched = self._prefix[start : start + len(chunk)]
            chunk[: len(patched)] = patched
            out += chunk
            if len(self._original) < self._length:
                break
            parse_message(bytes(self._original))
            self._length, self._original, self._prefix = 0, bytearray(), None
        return Release(bytes(out)) if out else None

    def decided(self, rewritten: bytes) -> None:
        """The translation of the message of the last :class:`Decide`.

        Raises:
            AssertionError: no translation was asked for, or it changed the length (a
                bug of the caller, not of the peer).
        """
        if not self._awaiting:
            raise AssertionError("no message awaits a translation")
        if len(rewritten) != self._length:
            raise AssertionError("a translation changed a message's length")
        self._awaiting = False
        self._prefix = rewritten[: min(DECISION_LENGTH, self._length)]

    def _take(self, count: int) -> bytes:
        taken = bytes(self._pending[: max(0, count)])
        del self._pending[: len(taken)]
        self._original += taken
        return taken
