"""MLLP framing (HL7 v2 Appendix C, MLLP release 1): ``0x0B`` message ``0x1C 0x0D``.

Reading is strict where the standard is and tolerant where engines differ: CR/LF and
spaces between frames are skipped (some engines end a frame with an extra newline);
any other byte outside a frame, a start block inside a frame or a connection closed
mid-frame is a :class:`FramingError`, after which the stream cannot be resynchronised
and the connection is closed. A message longer than the limit is read past (never
buffered whole) and raises :class:`MessageTooLarge` carrying its first bytes, so the
sender can be told why and the connection goes on with the next frame.
"""

from __future__ import annotations

import asyncio

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_BETWEEN_FRAMES = frozenset(b"\r\n \t")
_HEAD_BYTES = 4096


class FramingError(Exception):
    """The peer broke MLLP framing; the connection must be closed."""


class MessageTooLarge(Exception):
    """A framed message is longer than the gateway accepts; ``head`` is its beginning."""

    def __init__(self, head: bytes) -> None:
        super().__init__("message too large")
        self.head = head


def frame(message: bytes) -> bytes:
    """``message`` in an MLLP block."""
    return START_BLOCK + message + END_BLOCK


def reader_limit(max_message_bytes: int) -> int:
    """The StreamReader buffer limit that lets a message of ``max_message_bytes`` through."""
    return max_message_bytes + len(END_BLOCK)


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next framed message; None at a clean end of stream (between frames).

    The reader's limit (:func:`reader_limit`) bounds the message size.
    """
    while True:
        byte = await reader.read(1)
        if not byte:
            return None
        if byte == START_BLOCK:
            break
        if byte[0] not in _BETWEEN_FRAMES:
            raise FramingError("data outside an MLLP frame")
    try:
        block = await reader.readuntil(END_BLOCK)
    except asyncio.IncompleteReadError:
        raise FramingError("connection closed inside an MLLP frame") from None
    except asyncio.LimitOverrunError:
        head = await reader.read(_HEAD_BYTES)
        await _discard_rest_of_frame(reader)
        raise MessageTooLarge(head) from None
    message = block[: -len(END_BLOCK)]
    if START_BLOCK in message:
        raise FramingError("a start block inside an MLLP frame")
    return message


async def _discard_rest_of_frame(reader: asyncio.StreamReader) -> None:
    """Skip to just past the next end block, a buffer-full at a time."""
    while True:
        try:
            await reader.readuntil(END_BLOCK)
            return
        except asyncio.LimitOverrunError as overrun:
            # Keep the last byte: it may be the first half of the end block.
            await reader.readexactly(max(overrun.consumed - 1, 1))
        except asyncio.IncompleteReadError:
            raise FramingError("connection closed inside an MLLP frame") from None
