"""The sans-I/O AMI codec over the real captures and over hostile input."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxguard.errors import AmiFrameTooLarge, AmiProtocolError, ConfigError
from pbxguard.protocol.ami import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    AmiMessage,
    AmiParser,
    Banner,
    MalformedMessage,
    encode_action,
    encode_message,
)
from pbxguard.simulator.ami_server import recording_names
from tests.support.ami import TooLarge, parse_in_pieces, recording_bytes

NAMES = recording_names()
CAPTURES = {name: recording_bytes(name) for name in NAMES}
WHOLE = {name: parse_in_pieces(data) for name, data in CAPTURES.items()}
ZHANG_WEI = "张伟".encode()


def messages(results: Sequence[object]) -> list[AmiMessage]:
    return [r for r in results if isinstance(r, AmiMessage)]


def test_all_thirteen_captures_are_shipped() -> None:
    assert len(NAMES) == 13
    assert "hk-call-cut-by-ami-hangup" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_capture_parses_into_banner_login_events_and_goodbye(name: str) -> None:
    results = WHOLE[name]
    blocks = CAPTURES[name].split(b"\r\n\r\n")
    assert blocks[-1] == b""
    assert results[0] == Banner("Asterisk Call Manager/11.0.0", "11.0.0")
    parsed = messages(results)
    assert len(parsed) == len(results) - 1 == len(blocks) - 1
    assert parsed[0].response == "Success"
    assert parsed[0].get("Message") == "Authentication accepted"
    assert parsed[-1].response == "Goodbye"
    assert all(m.event for m in parsed[1:-1])


@pytest.mark.parametrize("name", NAMES)
def test_reencoding_a_capture_gives_back_its_bytes(name: str) -> None:
    """Fields are kept verbatim, so the simulator can replay them byte for byte."""
    data = CAPTURES[name]
    body = data.split(b"\r\n", 1)[1]
    assert b"".join(encode_message(m.fields) for m in messages(WHOLE[name])) == body


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.data())
def test_any_split_of_a_capture_yields_the_same_messages(name: str, cuts: st.DataObject) -> None:
    raw = CAPTURES[name]
    offsets = cuts.draw(st.lists(st.integers(0, len(raw)), max_size=40), label="cuts")
    assert parse_in_pieces(raw, offsets) == WHOLE[name]


def test_one_byte_reads_yield_the_same_messages() -> None:
    raw = CAPTURES["register-and-qualify"]
    assert parse_in_pieces(raw, range(len(raw))) == WHOLE["register-and-qualify"]


def test_chinese_caller_name_is_intact_under_every_split_near_it() -> None:
    raw = CAPTURES["chinese-caller-name-local"]
    expected = WHOLE["chinese-caller-name-local"]
    names = [m.get("CallerIDName") for m in messages(expected)]
    assert "张伟" in names
    offsets = []
    start = raw.find(ZHANG_WEI)
    while start >= 0:
        offsets.append(start)
        start = raw.find(ZHANG_WEI, start + 1)
    assert len(offsets) > 10
    for offset in offsets[:12]:
        for cut in range(offset - 3, offset + len(ZHANG_WEI) + 3):
            assert parse_in_pieces(raw, [cut]) == expected
            assert parse_in_pieces(raw, [cut, cut + 1, cut + 2]) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 400), max_size=12))
def test_chinese_name_survives_any_split_of_its_event(cuts: list[int]) -> None:
    raw = CAPTURES["chinese-caller-name-local"]
    begin = raw.rfind(b"\r\n\r\n", 0, raw.find(ZHANG_WEI)) + 4
    end = raw.find(b"\r\n\r\n", begin) + 4
    event = raw[begin:end]
    (message,) = parse_in_pieces(event, cuts, expect_banner=False)
    assert isinstance(message, AmiMessage)
    assert message.get("CallerIDName") == "张伟"


@pytest.mark.parametrize("name", ["张伟", "İpek Ünal", "ǅ"])
def test_lookups_after_a_value_that_lower_casing_changes(name: str) -> None:
    """A value whose folded form is longer ("İ" becomes two characters) must not shift the
    fields after it; a Chinese name, which folds to itself, takes the text search."""
    fields = [("Event", "Newchannel"), ("CallerIDName", name), ("Channel", "PJSIP/2001-1")]
    (parsed,) = parse_in_pieces(encode_message(fields), expect_banner=False)
    assert isinstance(parsed, AmiMessage)
    assert parsed.get("CallerIDName") == name
    assert parsed.get("channel") == "PJSIP/2001-1"
    assert parsed.get("EVENT") == "Newchannel"


@pytest.mark.parametrize("name", ["staff-international-answered", "burst-mixed-calls"])
def test_bare_lf_stream_equals_crlf_stream(name: str) -> None:
    lf_only = CAPTURES[name].replace(b"\r\n", b"\n")
    assert parse_in_pieces(lf_only) == WHOLE[name]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_mixed_line_endings_and_splits_equal_crlf(data: st.DataObject) -> None:
    raw = CAPTURES["hotline-unanswered"]
    lines = raw.split(b"\r\n")
    endings = data.draw(
        st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(lines), max_size=len(lines))
    )
    mixed = b"".join(line + end for line, end in zip(lines[:-1], endings, strict=False))
    cuts = data.draw(st.lists(st.integers(0, len(mixed)), max_size=20))
    assert parse_in_pieces(mixed, cuts) == WHOLE["hotline-unanswered"]


def test_extra_blank_lines_between_messages_are_ignored() -> None:
    stream = b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\n\nEvent: B\r\nX: 1\r\n\r\n\r\n"
    results = parse_in_pieces(stream, expect_banner=False)
    assert [m.event for m in messages(results)] == ["A", "B"]
    assert len(results) == 2


def test_keys_are_case_insensitive_and_may_repeat() -> None:
    (message,) = parse_in_pieces(
        b"Event: VarSet\r\nVariable: A=1\r\nvariable: B=2\r\nChannel: PJSIP/2001-00000001\r\n\r\n",
        expect_banner=False,
    )
    assert isinstance(message, AmiMessage)
    assert message.get("Variable") == "A=1"
    assert message.get("VARIABLE") == "A=1"
    assert message.get_all("variable") == ["A=1", "B=2"]
    assert message.get("channel") == "PJSIP/2001-00000001"
    assert "CHANNEL" in message
    assert "Missing" not in message
    assert message.get("Missing", "default") == "default"
    assert message.get_all("Missing") == []
    assert len(message) == 4


def test_lookups_on_parsed_messages_agree_with_their_fields() -> None:
    """Parsed messages are searched as text; the answers must match the split fields."""
    for results in WHOLE.values():
        for parsed in messages(results):
            built = AmiMessage(parsed.fields)
            for key, _ in parsed.fields:
                for variant in (key, key.lower(), key.upper()):
                    assert parsed.get(variant) == built.get(variant)
            assert parsed.get("NoSuchKey") is None
            assert parsed.event == built.event
            assert parsed.response == built.response


KEYS = st.sampled_from(["Event", "Channel", "Chan", "Variable", "X-Y", "channel", "A b"])
VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=8),
    KEYS | st.sampled_from(["Chan:nel", "Event: x", "Ev\nent", "", "É"]),
)
def test_lookups_agree_on_any_message(fields: list[tuple[str, str]], probe: str) -> None:
    (parsed,) = parse_in_pieces(encode_message(fields), expect_banner=False)
    assert isinstance(parsed, AmiMessage)
    built = AmiMessage(fields)
    assert parsed.fields == built.fields == tuple(fields)
    for key in (probe, probe.upper(), probe.lower(), *(k for k, _ in fields)):
        assert parsed.get(key) == built.get(key)
        assert parsed.get_all(key) == built.get_all(key)
        first = next((v for k, v in fields if k.lower() == key.lower()), None)
        assert parsed.get(key) == first


def test_unknown_caller_id_and_uniqueid_stay_text() -> None:
    hk = messages(WHOLE["hk-call-cut-by-ami-hangup"])
    newchannel = next(m for m in hk if m.event == "Newchannel")
    assert newchannel.get("ConnectedLineNum") == "<unknown>"
    assert newchannel.get("ConnectedLineName") == "<unknown>"
    assert newchannel.get("Uniqueid") == "1795397703.25"
    assert isinstance(newchannel.get("Uniqueid"), str)
    assert newchannel.get("AccountCode") == ""
    (prefixed,) = parse_in_pieces(
        b"Event: Newchannel\r\nUniqueid: pbx1-1795397703.250\r\n\r\n", expect_banner=False
    )
    assert isinstance(prefixed, AmiMessage)
    assert prefixed.get("Uniqueid") == "pbx1-1795397703.250"


def test_values_keep_colons_and_only_the_separating_space_goes() -> None:
    (message,) = parse_in_pieces(
        b"Response: Error\r\nMessage: Invalid/unknown command: Foo.\r\nEmpty:\r\n"
        b"NoSpace:value: with colon\r\nPadded:   two spaces kept\r\n\r\n",
        expect_banner=False,
    )
    assert isinstance(message, AmiMessage)
    assert message.get("Message") == "Invalid/unknown command: Foo."
    assert message.get("Empty") == ""
    assert message.get("NoSpace") == "value: with colon"
    assert message.get("Padded") == "  two spaces kept"
    assert message.response == "Error"


def test_line_without_colon_is_malformed_and_the_stream_goes_on() -> None:
    stream = (
        b"Event: Newchannel\r\nChannel: PJSIP/2001-1\r\nthis line has no separator\r\n\r\n"
        b"Event: Hangup\r\nChannel: PJSIP/2001-1\r\n\r\n"
    )
    first, second = parse_in_pieces(stream, expect_banner=False)
    assert isinstance(first, MalformedMessage)
    assert "line 3" in first.reason
    assert "':'" in first.reason
    assert first.raw.startswith(b"Event: Newchannel")
    assert first.salvaged is not None
    assert first.salvaged.fields == (("Event", "Newchannel"), ("Channel", "PJSIP/2001-1"))
    assert isinstance(second, AmiMessage)
    assert second.event == "Hangup"


def test_undecodable_bytes_are_malformed_with_a_salvaged_copy() -> None:
    stream = (
        b"Event: Newchannel\r\nCallerIDName: Caf\xe9\r\nChannel: PJSIP/2001-2\r\n\r\n"
        b"Event: Hangup\r\n\r\n"
    )
    first, second = parse_in_pieces(stream, expect_banner=False)
    assert isinstance(first, MalformedMessage)
    assert "UTF-8" in first.reason
    assert first.salvaged is not None
    assert first.salvaged.get("CallerIDName") == "Caf\ufffd"
    assert first.salvaged.get("Channel") == "PJSIP/2001-2"
    assert isinstance(second, AmiMessage)
    assert second.event == "Hangup"


OVERSIZED = (
    b"Event: Before\r\n\r\n"
    b"Event: Huge\r\nData: " + b"x" * 5000 + b"\r\nMore: " + b"y" * 300 + b"\r\n\r\n"
    b"Event: After\r\nChannel: PJSIP/2002-3\r\n\r\n"
)


def test_oversized_frame_raises_a_clear_error_and_the_stream_goes_on() -> None:
    parser = AmiParser(expect_banner=False, max_frame_size=1024)
    parser.receive_data(OVERSIZED)
    before = parser.next_message()
    assert isinstance(before, AmiMessage)
    assert before.event == "Before"
    with pytest.raises(AmiFrameTooLarge, match="exceeds the limit of 1024 bytes"):
        parser.next_message()
    after = parser.next_message()
    assert isinstance(after, AmiMessage)
    assert after.event == "After"
    assert after.get("Channel") == "PJSIP/2002-3"
    assert parser.next_message() is NEED_DATA


def test_oversized_frame_arriving_in_small_reads_is_skipped_the_same_way() -> None:
    cuts = range(0, len(OVERSIZED), 7)
    results = parse_in_pieces(OVERSIZED, cuts, expect_banner=False, max_frame_size=1024)
    assert [type(r) for r in results] == [AmiMessage, TooLarge, AmiMessage]
    after = results[2]
    assert isinstance(after, AmiMessage)
    assert after.event == "After"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, len(OVERSIZED)), max_size=25),
    st.integers(40, 6000),
)
def test_frame_limit_gives_the_same_result_under_any_split(cuts: list[int], limit: int) -> None:
    whole = parse_in_pieces(OVERSIZED, expect_banner=False, max_frame_size=limit)
    assert parse_in_pieces(OVERSIZED, cuts, expect_banner=False, max_frame_size=limit) == whole
    assert messages(whole)[-1].event == "After"


def test_a_frame_exactly_at_the_limit_passes_under_every_split() -> None:
    stream = (
        b"Event: A\r\nChannel: PJSIP/2001-1\r\n\r\n"
        b"Event: Bee\r\nChannel: PJSIP/2002-2\r\n\r\n"
        b"Event: C\r\n\r\n"
    )
    limit = len(b"Event: Bee\nChannel: PJSIP/2002-2")
    for cut in range(len(stream) + 1):
        results = parse_in_pieces(stream, [cut], expect_banner=False, max_frame_size=limit)
        assert [r.event for r in results if isinstance(r, AmiMessage)] == ["A", "Bee", "C"], cut
        results = parse_in_pieces(stream, [cut], expect_banner=False, max_frame_size=limit - 1)
        assert [type(r) for r in results] == [AmiMessage, TooLarge, AmiMessage], cut
        assert [r.event for r in results if isinstance(r, AmiMessage)] == ["A", "C"], cut


def test_frame_limit_must_be_sensible() -> None:
    with pytest.raises(ConfigError):
        AmiParser(max_frame_size=0)


def test_banner_split_across_reads_and_version() -> None:
    results = parse_in_pieces(b"Asterisk Call Manager/11.0.0\r\nEvent: X\r\n\r\n", [3, 29, 30])
    assert results[0] == Banner("Asterisk Call Manager/11.0.0", "11.0.0")
    assert isinstance(results[1], AmiMessage)


def test_a_stream_without_the_banner_is_reported() -> None:
    results = parse_in_pieces(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert isinstance(results[0], MalformedMessage)
    assert "banner" in results[0].reason


def test_eof_inside_a_message_and_data_after_eof() -> None:
    parser = AmiParser(expect_banner=False)
    parser.receive_data(b"Event: Complete\r\n\r\nEvent: Cut\r\nChannel: PJSIP/20")
    parser.receive_eof()
    complete, cut = parser.next_message(), parser.next_message()
    assert isinstance(complete, AmiMessage)
    assert isinstance(cut, MalformedMessage)
    assert "ended in the middle" in cut.reason
    assert cut.salvaged is not None
    assert cut.salvaged.get("Channel") == "PJSIP/20"
    assert parser.next_message() is NEED_DATA
    with pytest.raises(AmiProtocolError):
        parser.receive_data(b"Event: Late\r\n\r\n")


def test_encode_action_writes_crlf_lines_and_a_blank_line() -> None:
    data = encode_action(
        "Originate",
        [("Channel", "PJSIP/2001"), ("Variable", "A=1"), ("Variable", "B=张伟")],
        action_id="42",
    )
    assert data == (
        b"Action: Originate\r\nActionID: 42\r\nChannel: PJSIP/2001\r\n"
        b"Variable: A=1\r\nVariable: B=" + "张伟".encode() + b"\r\n\r\n"
    )
    (parsed,) = parse_in_pieces(data, expect_banner=False)
    assert isinstance(parsed, AmiMessage)
    assert parsed.action_id == "42"
    assert parsed.get_all("Variable") == ["A=1", "B=张伟"]


def test_encode_action_accepts_a_mapping() -> None:
    data = encode_action("Hangup", {"Channel": "PJSIP/2001-1", "Cause": "21"}, action_id="7")
    assert data == b"Action: Hangup\r\nActionID: 7\r\nChannel: PJSIP/2001-1\r\nCause: 21\r\n\r\n"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Channel", "PJSIP/2001-1\r\nAction: Hangup"),
        ("Channel", "PJSIP/2001-1\nX: y"),
        ("Channel", "PJSIP/2001-1\r"),
        ("Chan\r\nnel", "x"),
        ("Channel: x", "y"),
        ("", "y"),
        (" Channel", "y"),
    ],
)
def test_encode_refuses_header_injection_and_bad_keys(key: str, value: str) -> None:
    with pytest.raises(AmiProtocolError):
        encode_action("Hangup", [(key, value)], action_id="1")


def test_encode_refuses_text_with_no_utf8_form() -> None:
    """Found by fuzzing: a lone surrogate raised UnicodeEncodeError out of encode_message."""
    with pytest.raises(AmiProtocolError, match="not valid Unicode"):
        encode_action("Hangup", [("Channel", "PJSIP/2001-\udc80")], action_id="1")
    with pytest.raises(AmiProtocolError, match="not valid Unicode"):
        encode_message([("\ud800", "x")])


def test_encode_refuses_a_second_action_or_actionid_and_non_strings() -> None:
    with pytest.raises(AmiProtocolError):
        encode_action("Ping", [("ActionID", "x")], action_id="1")
    with pytest.raises(AmiProtocolError):
        encode_action("Ping", [("action", "Hangup")], action_id="1")
    with pytest.raises(AmiProtocolError, match="strings"):
        encode_action("Hangup", [("Cause", 21)], action_id="1")  # type: ignore[list-item]
    with pytest.raises(AmiProtocolError):
        encode_action("Ping", (), action_id="1\r\nAction: Hangup")


def test_message_is_immutable_comparable_and_hides_secrets() -> None:
    login = AmiMessage([("Action", "Login"), ("Username", "pbxguard"), ("Secret", "s3cr3t")])
    with pytest.raises(AttributeError):
        login._fields = ()
    with pytest.raises(AttributeError):
        del login._fields
    assert "s3cr3t" not in repr(login)
    assert login == AmiMessage({"Action": "Login", "Username": "pbxguard", "Secret": "s3cr3t"})
    assert hash(login) == hash(AmiMessage(list(login)))
    assert login.event is None
    assert login.response is None
    parsed = parse_in_pieces(encode_message(login.fields), expect_banner=False)
    assert parsed == [login]


# --- fuzzing: whatever arrives on the socket --------------------------------------------------

# Pieces of real AMI traffic (a fuzzing dictionary) mixed with arbitrary bytes.
_AMI_PIECES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n\r\n",
            b"\n\n",
            b":",
            b": ",
            b"Asterisk Call Manager/11.0.0\r\n",
            b"Event: Newchannel\r\n",
            b"Response: Success\r\n",
            b"Channel: PJSIP/2001-00000001\r\n",
            b"CallerIDName: ",
            ZHANG_WEI,
            ZHANG_WEI[:2],
            b"\xff",
            b"\x00",
        ]
    ),
    st.integers(1, 3000).map(lambda n: b"x" * n),
)
AMI_STREAMS = st.lists(_AMI_PIECES, max_size=30).map(b"".join)
FRAME_LIMITS = st.sampled_from([16, 64, 1024, DEFAULT_MAX_FRAME_SIZE])


def _well_formed(results: Sequence[object]) -> None:
    for result in results:
        if isinstance(result, AmiMessage):
            for key, value in result.fields:
                assert ":" not in key
                assert "\n" not in key
                assert "\n" not in value
            assert result.event is None or "\n" not in result.event
        elif isinstance(result, MalformedMessage):
            assert result.reason


@given(
    data=AMI_STREAMS,
    cuts=st.lists(st.integers(min_value=0), max_size=20),
    expect_banner=st.booleans(),
    limit=FRAME_LIMITS,
)
def test_fuzz_any_bytes_split_anywhere_give_the_same_results(
    data: bytes, cuts: list[int], expect_banner: bool, limit: int
) -> None:
    """Garbage yields messages, malformed frames and AmiFrameTooLarge, nothing else."""
    whole = parse_in_pieces(data, expect_banner=expect_banner, max_frame_size=limit)
    cuts = [c % (len(data) + 1) for c in cuts]
    split = parse_in_pieces(data, cuts, expect_banner=expect_banner, max_frame_size=limit)
    assert split == whole
    _well_formed(whole)
    for result in whole:
        assert not isinstance(result, Banner) or expect_banner


@given(
    name=st.sampled_from(NAMES),
    garbage=AMI_STREAMS,
    where=st.integers(min_value=0),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_fuzz_a_capture_with_garbage_spliced_in(
    name: str, garbage: bytes, where: int, cuts: list[int]
) -> None:
    """A burst of garbage between two messages costs its own frames and nothing more."""
    raw = CAPTURES[name]
    boundaries = [m.end() for m in re.finditer(rb"\r\n\r\n", raw)]
    at = boundaries[where % len(boundaries)]
    stream = raw[:at] + garbage + b"\r\n\r\n" + raw[at:]
    results = parse_in_pieces(stream, [c % (len(stream) + 1) for c in cuts])
    assert results == parse_in_pieces(stream)
    _well_formed(results)
    got = iter(messages(results))
    assert all(any(m == g for g in got) for m in messages(WHOLE[name]))


# Any code point, lone surrogates included (st.text() never yields them).
_ANY_TEXT = st.lists(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=30)


@given(st.lists(st.tuples(_ANY_TEXT.map("".join), _ANY_TEXT.map("".join)), max_size=6))
def test_fuzz_encoding_refuses_or_round_trips(fields: list[tuple[str, str]]) -> None:
    """Anything a caller controls is encoded into one message that reads back the same."""
    try:
        data = encode_message(fields)
    except AmiProtocolError:
        return
    assert data.endswith(b"\r\n")
    results = parse_in_pieces(data, expect_banner=False)
    if not fields:
        assert results == []  # a lone blank line, which the PBX skips
        return
    assert data.endswith(b"\r\n\r\n")
    (message,) = results
    assert isinstance(message, AmiMessage)
    assert message.fields == tuple(fields)
