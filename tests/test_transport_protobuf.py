"""The codec for pipecat's binary frames: golden bytes written from frames.proto by hand,
round trips of every kind, and malformed input (never a crash, never a read past the end)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rustvani_trio.transports._protobuf import (
    PbAudio,
    PbFrame,
    PbInterruption,
    PbMessage,
    PbText,
    PbTranscription,
    ProtobufDecodeError,
    decode_frame,
    encode_frame,
)

# Frame{message: MessageFrame{data: "hi"}}: field 4 (0x22), length 4, field 1 (0x0a) "hi"
MESSAGE_HI = bytes([0x22, 0x04, 0x0A, 0x02]) + b"hi"
# Frame{audio: {name: "audio", audio: 01 02, sample_rate: 16000, num_channels: 1}}, as
# pipecat's JS serializer writes it (id 0 is left out, as proto3 does)
AUDIO = (
    bytes([0x12, 0x10])
    + bytes([0x12, 0x05])
    + b"audio"
    + bytes([0x1A, 0x02, 0x01, 0x02])
    + bytes([0x20, 0x80, 0x7D])  # 16000 as a varint
    + bytes([0x28, 0x01])
)


def test_golden_bytes() -> None:
    assert encode_frame(PbMessage(data="hi")) == MESSAGE_HI
    assert decode_frame(MESSAGE_HI) == PbMessage(data="hi")
    assert decode_frame(AUDIO) == PbAudio(
        audio=b"\x01\x02", sample_rate=16000, num_channels=1, name="audio"
    )
    assert (
        encode_frame(PbAudio(audio=b"\x01\x02", sample_rate=16000, num_channels=1, name="audio"))
        == AUDIO
    )


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    extra = bytes([0x78, 0x05])  # field 15 varint
    extra += bytes([0x81, 0x01]) + b"\x00" * 8  # field 16, 64-bit
    extra += bytes([0x85, 0x01]) + b"\x00" * 4  # field 16, 32-bit
    inner = bytes([0x0A, 0x02]) + b"hi" + extra
    assert decode_frame(bytes([0x22, len(inner)]) + inner) == PbMessage(data="hi")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "no known frame kind"),
        (bytes([0x22, 0x10, 0x0A]), "past the end"),
        (bytes([0x22]), "truncated varint"),
        (bytes([0x22, 0x02, 0x0A, 0x05]), "past the end"),
        (bytes([0x22, 0x01, 0x08]), "truncated varint"),
        (bytes([0x22, 0x03, 0x0A, 0x01, 0xFF]), "UTF-8"),
        (bytes([0x22, 0x02, 0x08, 0x01]), "must be length-delimited"),
        (bytes([0x12, 0x02, 0x22, 0x00]), "must be a varint"),
        (bytes([0x23, 0x00]), "wire type 3"),
        (bytes([0x02, 0x00]), "field number 0"),
        (bytes([0x22]) + b"\xff" * 11, "longer than 10 bytes"),
        (bytes([0x7A, 0x00]), "no known frame kind"),
        (bytes([0x29]) + b"\x00" * 3, "truncated fixed-width"),
        # a tenth byte carrying more than the 64th bit: the value was 2**70, accepted
        (bytes([0x22]) + b"\xff" * 9 + b"\x7f", "overflows 64 bits"),
        (bytes([0x12, 0x0B, 0x20]) + b"\xff" * 9 + b"\x02", "overflows 64 bits"),
        (bytes([0x24]), "wire type 4"),
        (bytes([0x26, 0x00]), "wire type 6"),
        (bytes([0x27, 0x00]), "wire type 7"),
        # field numbers end at 2**29 - 1
        (bytes([0x80, 0x80, 0x80, 0x80, 0x10, 0x00]), "field number 536870912"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(ProtobufDecodeError, match=words):
        decode_frame(data)


texts = st.text(max_size=50)
ids = st.integers(min_value=0, max_value=2**64 - 1)
frames: st.SearchStrategy[PbFrame] = st.one_of(
    st.builds(PbText, text=texts, id=ids, name=texts),
    st.builds(
        PbAudio,
        audio=st.binary(max_size=100),
        sample_rate=st.integers(0, 2**32 - 1),
        num_channels=st.integers(0, 2**32 - 1),
        id=ids,
        name=texts,
        pts=st.none() | ids,
    ),
    st.builds(PbTranscription, text=texts, user_id=texts, timestamp=texts, id=ids, name=texts),
    st.builds(PbMessage, data=texts),
    st.builds(PbInterruption, id=ids, name=texts),
)


@given(frames)
def test_round_trip(frame: PbFrame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_the_codec_error(data: bytes) -> None:
    with contextlib.suppress(ProtobufDecodeError):
        decode_frame(data)


@given(frames, st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), max_size=4))
def test_corrupted_frames_decode_or_raise_the_codec_error(
    frame: PbFrame, changes: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_frame(frame))
    for at, value in changes:
        if data:
            data[at % len(data)] = value
    with contextlib.suppress(ProtobufDecodeError):
        decode_frame(bytes(data))


def test_negative_values_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        encode_frame(PbText(text="x", id=-1))
