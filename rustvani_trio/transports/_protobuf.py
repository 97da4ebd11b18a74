"""A small codec for pipecat's binary WebSocket frames (``frames.proto``, package ``pipecat``).

The wire format is one protobuf ``Frame`` message per WebSocket binary message::

    message Frame { oneof frame {
        TextFrame text = 1;                  // id=1 uint64, name=2 string, text=3 string
        AudioRawFrame audio = 2;             // id, name, audio=3 bytes, sample_rate=4 uint32,
                                             //   num_channels=5 uint32, pts=6 uint64
        TranscriptionFrame transcription = 3;// id, name, text=3, user_id=4, timestamp=5 strings
        MessageFrame message = 4;            // data=1 string (an RTVI message as JSON)
        InterruptionFrame interruption = 5;  // id, name
    } }

Only the protobuf wire types this schema uses are produced; every wire type is understood when
decoding (unknown fields are skipped, as protobuf requires). Malformed input raises
:class:`ProtobufDecodeError` naming what was wrong; it never reads past the buffer.
"""

from __future__ import annotations

import attrs

from ..exceptions import RustvaniError

__all__ = [
    "PbAudio",
    "PbInterruption",
    "PbMessage",
    "PbText",
    "PbTranscription",
    "ProtobufDecodeError",
    "decode_frame",
    "encode_frame",
]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10
_MAX_FIELD = 1 << 29


class ProtobufDecodeError(RustvaniError, ValueError):
    """A binary message is not a valid pipecat ``Frame``."""


@attrs.frozen(kw_only=True)
class PbText:
    """``TextFrame`` (oneof field 1)."""

    text: str
    id: int = 0
    name: str = ""


@attrs.frozen(kw_only=True)
class PbAudio:
    """``AudioRawFrame`` (oneof field 2): PCM s16le."""

    audio: bytes
    sample_rate: int
    num_channels: int
    id: int = 0
    name: str = ""
    pts: int | None = None


@attrs.frozen(kw_only=True)
class PbTranscription:
    """``TranscriptionFrame`` (oneof field 3)."""

    text: str
    user_id: str = ""
    timestamp: str = ""
    id: int = 0
    name: str = ""


@attrs.frozen(kw_only=True)
class PbMessage:
    """``MessageFrame`` (oneof field 4): ``data`` is an RTVI message as JSON text."""

    data: str


@attrs.frozen(kw_only=True)
class PbInterruption:
    """``InterruptionFrame`` (oneof field 5)."""

    id: int = 0
    name: str = ""


PbFrame = PbText | PbAudio | PbTranscription | PbMessage | PbInterruption

# --------------------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"protobuf varints here are unsigned, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + payload


def _int_field(field: int, value: int | None, *, always: bool = False) -> bytes:
    # proto3 leaves zero scalars out (``optional`` ones are written when set).
    if value is None or (value == 0 and not always):
        return b""
    return _key(field, _VARINT) + _varint(value)


def _str_field(field: int, value: str) -> bytes:
    return _len_field(field, value.encode()) if value else b""


def _body(frame: PbFrame) -> tuple[int, bytes]:
    if isinstance(frame, PbMessage):
        return 4, _str_field(1, frame.data)
    head = _int_field(1, frame.id) + _str_field(2, frame.name)
    if isinstance(frame, PbText):
        return 1, head + _str_field(3, frame.text)
    if isinstance(frame, PbAudio):
        audio = _len_field(3, frame.audio) if frame.audio else b""
        rest = _int_field(4, frame.sample_rate) + _int_field(5, frame.num_channels)
        return 2, head + audio + rest + _int_field(6, frame.pts, always=True)
    if isinstance(frame, PbTranscription):
        strings = _str_field(3, frame.text) + _str_field(4, frame.user_id)
        return 3, head + strings + _str_field(5, frame.timestamp)
    return 5, head


def encode_frame(frame: PbFrame) -> bytes:
    """Serialise one frame as a pipecat ``Frame`` message."""
    field, body = _body(frame)
    return _len_field(field, body)


# --------------------------------------------------------------------------- decoding


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ProtobufDecodeError("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >> 64:
                raise ProtobufDecodeError("varint overflows 64 bits")
            return value, pos + i + 1
        shift += 7
    raise ProtobufDecodeError("varint longer than 10 bytes")


def _fields(data: bytes) -> dict[int, int | bytes]:
    """Every field of one message, by number (the last occurrence wins, as in protobuf)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if not 0 < field < _MAX_FIELD:
            raise ProtobufDecodeError(f"field number {field} is invalid (1..{_MAX_FIELD - 1})")
        if wire_type == _VARINT:
            out[field], pos = _read_varint(data, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ProtobufDecodeError(f"field {field} claims {length} bytes past the end")
            out[field] = data[pos : pos + length]
            pos += length
        elif wire_type in (_I64, _I32):
            size = 8 if wire_type == _I64 else 4
            if pos + size > len(data):
                raise ProtobufDecodeError(f"truncated fixed-width field {field}")
            out[field] = data[pos : pos + size]
            pos += size
        else:
            raise ProtobufDecodeError(f"unsupported wire type {wire_type} (field {field})")
    return out


def _get_int(fields: dict[int, int | bytes], number: int, what: str) -> int:
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise ProtobufDecodeError(f"{what} must be a varint")
    return value


def _get_bytes(fields: dict[int, int | bytes], number: int, what: str) -> bytes:
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise ProtobufDecodeError(f"{what} must be length-delimited")
    return value


def _get_str(fields: dict[int, int | bytes], number: int, what: str) -> str:
    try:
        return _get_bytes(fields, number, what).decode()
    except UnicodeDecodeError as exc:
        raise ProtobufDecodeError(f"{what} is not valid UTF-8") from exc


def decode_frame(data: bytes) -> PbFrame:
    """Parse one pipecat ``Frame`` message.

    Raises:
        ProtobufDecodeError: the bytes are not a ``Frame`` holding one of the known kinds.
    """
    outer = _fields(bytes(data))
    kinds = [n for n in (1, 2, 3, 4, 5) if n in outer]
    if not kinds:
        raise ProtobufDecodeError("no known frame kind (text, audio, transcription, message, ...)")
    kind = kinds[-1]
    inner = _fields(_get_bytes(outer, kind, "the frame"))
    if kind == 4:
        return PbMessage(data=_get_str(inner, 1, "message.data"))
    ident = _get_int(inner, 1, "id")
    name = _get_str(inner, 2, "name")
    if kind == 1:
        return PbText(text=_get_str(inner, 3, "text.text"), id=ident, name=name)
    if kind == 2:
        return PbAudio(
            audio=_get_bytes(inner, 3, "audio.audio"),
            sample_rate=_get_int(inner, 4, "audio.sample_rate"),
            num_channels=_get_int(inner, 5, "audio.num_channels"),
            pts=_get_int(inner, 6, "audio.pts") if 6 in inner else None,
            id=ident,
            name=name,
        )
    if kind == 3:
        return PbTranscription(
            text=_get_str(inner, 3, "transcription.text"),
            user_id=_get_str(inner, 4, "transcription.user_id"),
            timestamp=_get_str(inner, 5, "transcription.timestamp"),
            id=ident,
            name=name,
        )
    return PbInterruption(id=ident, name=name)
