"""SSEDecoder: the WHATWG event-stream rules, fed with awkwardly split raw bytes."""

from __future__ import annotations

import pytest

from playground.providers.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes, flush: bool = True) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    if flush:
        events.extend(decoder.flush())
    return events


def datas(events: list[SSEEvent]) -> list[str]:
    return [event.data for event in events]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_separates_events(eol: str) -> None:
    stream = f"data: one{eol}{eol}data: two{eol}{eol}".encode()
    assert datas(decode(stream)) == ["one", "two"]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_byte_by_byte_feeding_gives_the_same_events(eol: str) -> None:
    stream = f"data: héllo 😀{eol}{eol}data: [DONE]{eol}{eol}".encode()
    assert datas(decode(*bytewise(stream))) == ["héllo 😀", "[DONE]"]


def test_a_crlf_split_across_two_feeds_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # If the LF were taken as a second line ending, "a" would be dispatched here already.
    assert decoder.feed(b"\n") == []
    assert datas(decoder.feed(b"data: b\r\n\r\n")) == ["a\nb"]


def test_a_lone_cr_at_the_end_of_a_feed_still_ends_the_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert datas(decoder.feed(b"\r")) == ["a"]


def test_a_cr_before_a_feed_that_holds_only_half_a_character_still_pairs_with_the_lf() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\r")
    assert decoder.feed("é".encode()[:1]) == []  # nothing decodable yet
    assert datas(decoder.feed("é".encode()[1:] + b"\n\n")) == ["a"]
    # "é" started a new line with no field value: it is an unknown field and ignored.


def test_a_two_byte_character_split_across_feeds_is_decoded_whole() -> None:
    raw = "data: é\n\n".encode()
    split = raw.index(b"\xc3") + 1
    assert datas(decode(raw[:split], raw[split:])) == ["é"]


def test_a_four_byte_emoji_split_byte_by_byte_is_decoded_whole() -> None:
    raw = "data: 😀!\n\n".encode()
    assert datas(decode(*bytewise(raw))) == ["😀!"]


def test_comment_lines_are_ignored() -> None:
    stream = b": keep-alive\n\ndata: x\n: another comment\n\n:\n\n"
    assert datas(decode(stream)) == ["x"]


def test_multiple_data_lines_are_joined_with_newlines() -> None:
    stream = b'data: {\ndata:   "a": 1\ndata: }\n\n'
    assert datas(decode(stream)) == ['{\n  "a": 1\n}']


def test_only_one_leading_space_is_stripped_and_a_missing_space_is_fine() -> None:
    stream = b"data:no-space\n\ndata:  two-spaces\n\n"
    assert datas(decode(stream)) == ["no-space", " two-spaces"]


def test_event_id_and_retry_fields_are_parsed() -> None:
    stream = b"event: ping\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\n"
    first, second = decode(stream)
    assert (first.event, first.id, first.retry, first.data) == ("ping", "7", 1500, "x")
    # The event type resets to "message" after dispatch; the last event id persists (spec).
    assert (second.event, second.id) == ("message", "7")


def test_invalid_retry_and_ids_with_nul_are_ignored() -> None:
    (event,) = decode(b"retry: soon\nid: a\x00b\ndata: x\n\n")
    assert event.retry is None and event.id is None


def test_a_blank_line_without_data_dispatches_nothing() -> None:
    assert decode(b"\n\n\nevent: lonely\n\n") == []


def test_an_empty_data_field_dispatches_an_empty_event() -> None:
    assert datas(decode(b"data:\n\n")) == [""]


def test_done_marker_is_an_ordinary_event_for_the_decoder() -> None:
    assert datas(decode(b"data: {}\n\ndata: [DONE]\n\n")) == ["{}", "[DONE]"]


def test_a_leading_byte_order_mark_is_skipped() -> None:
    assert datas(decode(b"\xef\xbb\xbfdata: x\n\n")) == ["x"]


def test_an_event_without_its_trailing_blank_line_is_flushed_at_eof() -> None:
    # Documented deviation from the WHATWG spec: the final event is dispatched, not dropped.
    assert datas(decode(b"data: a\n\ndata: last\n", flush=False)) == ["a"]
    assert datas(decode(b"data: a\n\ndata: last\n")) == ["a", "last"]
    assert datas(decode(b"data: no-newline-at-all")) == ["no-newline-at-all"]


def test_flush_after_a_complete_stream_adds_nothing() -> None:
    assert datas(decode(b"data: a\r\n\r\n")) == ["a"]
