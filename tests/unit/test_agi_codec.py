"""The FastAGI codec against transcripts in the exact format Asterisk's res_agi writes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxguard.errors import AgiProtocolError
from pbxguard.protocol.agi import (
    CLOSED,
    DEFAULT_MAX_ENVIRONMENT_BYTES,
    MAX_COMMAND_BYTES,
    NEED_DATA,
    AgiCommand,
    AgiConnection,
    AgiEnvironment,
    AgiEvent,
    AgiReply,
    ChannelHungUp,
    quote_argument,
)
from tests.support.agi_client import environment_bytes, parse_agi_args

# What Asterisk 22 sends for AGI(agi://127.0.0.1:4573/authorize,${CALLERID(num)},${EXTEN})
# from extension 2003, whose caller name is UTF-8 (setup_env() in res/res_agi.c).
TRANSCRIPT = (
    "agi_network: yes\n"
    "agi_network_script: authorize\n"
    "agi_request: agi://127.0.0.1:4573/authorize\n"
    "agi_channel: PJSIP/2003-0000000a\n"
    "agi_language: en\n"
    "agi_type: PJSIP\n"
    "agi_uniqueid: 1795397584.12\n"
    "agi_version: 22.5.2\n"
    "agi_callerid: 2003\n"
    "agi_calleridname: 张伟\n"
    "agi_callingpres: 0\n"
    "agi_callingani2: 0\n"
    "agi_callington: 0\n"
    "agi_callingtns: 0\n"
    "agi_dnid: 02112345678\n"
    "agi_rdnis: unknown\n"
    "agi_context: pbxguard-check\n"
    "agi_extension: s\n"
    "agi_priority: 6\n"
    "agi_enhanced: 0.0\n"
    "agi_accountcode: \n"
    "agi_threadid: 140536227473088\n"
    "agi_arg_1: 2003\n"
    "agi_arg_2: 02112345678\n"
    "\n"
).encode()

USAGE_520 = (
    "520-Invalid command syntax.  Proper usage follows:\n"
    "Returns 0 if variablename is not set. Returns 1 if variablename is set\n"
    "and returns the variable in parentheses.\n"
    "Example return code: 200 result=1 (testvariable)\n"
    "520 End of proper usage.\n"
)


def _environment(data: bytes = TRANSCRIPT, **limits: int) -> tuple[AgiConnection, AgiEnvironment]:
    connection = AgiConnection(**limits)
    connection.receive_data(data)
    event = connection.next_event()
    assert isinstance(event, AgiEnvironment)
    return connection, event


def _events(connection: AgiConnection) -> list[AgiEvent]:
    events: list[AgiEvent] = []
    while (event := connection.next_event()) is not NEED_DATA:
        events.append(event)
        if event is CLOSED:
            break
    return events


def _after_commands(count: int) -> AgiConnection:
    connection, _ = _environment()
    for _ in range(count):
        connection.send(AgiCommand.set_variable("PBXGUARD_VERDICT", "allow"))
    return connection


def test_environment_decodes_every_res_agi_field() -> None:
    connection, env = _environment()

    assert env.script == "authorize"
    assert env.request == "agi://127.0.0.1:4573/authorize"
    assert env.channel == "PJSIP/2003-0000000a"
    assert env.uniqueid == "1795397584.12"
    assert env.callerid == "2003"
    assert env.calleridname == "张伟"
    assert env.extension == "s"
    assert env.context == "pbxguard-check"
    assert env.args == ("2003", "02112345678")
    assert env.get("agi_accountcode") == ""
    assert env.get("agi_network") == "yes"
    assert env.get("agi_priority") == "6"
    assert env.get("agi_rdnis") == "unknown"
    assert env.get("agi_nothing") is None
    assert connection.environment_received
    assert connection.next_event() is NEED_DATA


def test_environment_repr_hides_the_arguments_that_may_carry_a_pin() -> None:
    data = TRANSCRIPT.replace(
        b"agi_arg_2: 02112345678\n", b"agi_arg_2: 02112345678\nagi_arg_3: 7310\n"
    )
    _, env = _environment(data)

    assert env.args[2] == "7310"
    assert "7310" not in repr(env)


@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TRANSCRIPT)), max_size=12))
def test_any_split_of_the_stream_yields_the_same_environment(cuts: list[int]) -> None:
    _, whole = _environment()
    connection = AgiConnection()
    bounds = [0, *sorted(cuts), len(TRANSCRIPT)]
    events: list[AgiEvent] = []
    for start, end in itertools.pairwise(bounds):
        if start < end:  # an empty read would mean end of stream
            connection.receive_data(TRANSCRIPT[start:end])
            events.extend(_events(connection))

    assert events == [whole]
    assert events[0].calleridname == "张伟"  # type: ignore[union-attr]


def test_caller_name_split_inside_a_utf8_character_arrives_intact() -> None:
    cut = TRANSCRIPT.index("张".encode()) + 1
    connection = AgiConnection()
    connection.receive_data(TRANSCRIPT[:cut])
    assert connection.next_event() is NEED_DATA
    connection.receive_data(TRANSCRIPT[cut:])
    env = connection.next_event()

    assert isinstance(env, AgiEnvironment)
    assert env.calleridname == "张伟"


def test_unknown_caller_is_none_and_a_colon_in_a_value_is_kept() -> None:
    data = TRANSCRIPT.replace(b"agi_callerid: 2003", b"agi_callerid: unknown").replace(
        "agi_calleridname: 张伟".encode(), b"agi_calleridname: Ops: night desk"
    )
    _, env = _environment(data)

    assert env.callerid is None
    assert env.calleridname == "Ops: night desk"


@pytest.mark.parametrize(
    ("network_script", "request_url", "script"),
    [
        (None, "agi://127.0.0.1:4573/authorize", "authorize"),
        (None, "agi://127.0.0.1", ""),
        ("authorize?source=legacy", "agi://127.0.0.1/authorize?source=legacy", "authorize"),
        ("pbxguard/pin/", "agi://127.0.0.1/pbxguard/pin/", "pbxguard/pin"),
    ],
)
def test_route_name_comes_from_the_url_path(
    network_script: str | None, request_url: str, script: str
) -> None:
    lines = TRANSCRIPT.decode().splitlines(keepends=True)
    lines = [line for line in lines if not line.startswith("agi_network_script")]
    if network_script is not None:
        lines.insert(1, f"agi_network_script: {network_script}\n")
    data = "".join(lines).replace("agi://127.0.0.1:4573/authorize", request_url).encode()
    _, env = _environment(data)

    assert env.script == script


def test_environment_up_to_the_cap_is_accepted_and_one_byte_more_is_refused() -> None:
    _environment(max_environment_bytes=len(TRANSCRIPT))

    with pytest.raises(AgiProtocolError, match="larger than"):
        _environment(max_environment_bytes=len(TRANSCRIPT) - 1)


def test_environment_cap_is_enforced_before_the_blank_line_ever_arrives() -> None:
    connection = AgiConnection(max_environment_bytes=1024)
    connection.receive_data(b"agi_network: yes\nagi_calleridname: " + b"x" * 1000)

    with pytest.raises(AgiProtocolError, match="larger than 1024"):
        connection.next_event()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: pbx\r\n\r\n", "not an AGI environment line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", "not an AGI environment line"),
        (b"agi_network: yes\nSIP/2.0 200 OK\n", "not an AGI environment line"),
        (b"\n", "empty AGI environment"),
        (TRANSCRIPT.replace(b"agi_type: PJSIP\n", b"agi_type: PJSIP\nagi_type: SIP\n"), "repeats"),
        (TRANSCRIPT.replace(b"agi_uniqueid: 1795397584.12\n", b""), "lacks agi_uniqueid"),
        (TRANSCRIPT.replace(b"agi_arg_1: 2003\n", b""), "numbered 1 to N"),
        # found by fuzzing: int() raised ValueError on an index of more than 4300 digits
        (TRANSCRIPT.replace(b"agi_arg_2:", b"agi_arg_" + b"7" * 4301 + b":"), "out of range"),
        (TRANSCRIPT.replace(b"agi_arg_2:", b"agi_arg_1000:"), "out of range"),
    ],
)
def test_what_is_not_an_agi_environment_is_refused(data: bytes, problem: str) -> None:
    connection = AgiConnection()
    connection.receive_data(data)

    with pytest.raises(AgiProtocolError, match=problem):
        _events(connection)


def test_a_client_that_closes_without_a_byte_is_a_clean_close() -> None:
    connection = AgiConnection()
    connection.receive_data(b"")

    assert connection.next_event() is CLOSED


def test_a_client_that_closes_half_way_through_the_environment_is_an_error() -> None:
    connection = AgiConnection()
    connection.receive_data(TRANSCRIPT[: len(TRANSCRIPT) // 2])
    assert connection.next_event() is NEED_DATA
    connection.receive_data(b"")

    with pytest.raises(AgiProtocolError, match="middle of the AGI environment"):
        connection.next_event()


def test_data_after_the_end_of_stream_is_an_error() -> None:
    connection = AgiConnection()
    connection.receive_data(b"")

    with pytest.raises(AgiProtocolError, match="after the end"):
        connection.receive_data(b"agi_network: yes\n")


def test_no_command_before_the_environment() -> None:
    with pytest.raises(AgiProtocolError, match="before the environment"):
        AgiConnection().send(AgiCommand.verbose("too early"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", AgiReply(200, "result=1", result=1)),
        ("200 result=0", AgiReply(200, "result=0", result=0)),
        ("200 result=-1", AgiReply(200, "result=-1", result=-1)),
        (
            "200 result=1 (allow)",
            AgiReply(200, "result=1 (allow)", result=1, data="allow"),
        ),
        (
            "200 result=1 (a (nested) value)",
            AgiReply(200, "result=1 (a (nested) value)", result=1, data="a (nested) value"),
        ),
        (
            "200 result=0 endpos=12345",
            AgiReply(200, "result=0 endpos=12345", result=0, endpos=12345),
        ),
        (
            "200 result=1 (timeout) endpos=8000",
            AgiReply(200, "result=1 (timeout) endpos=8000", result=1, data="timeout", endpos=8000),
        ),
        ("510 Invalid or unknown command", AgiReply(510, "Invalid or unknown command")),
        (
            "511 Command Not Permitted on a dead channel or intercept routine",
            AgiReply(511, "Command Not Permitted on a dead channel or intercept routine"),
        ),
        (
            "520 Invalid command syntax.  Proper usage not available.",
            AgiReply(520, "Invalid command syntax.  Proper usage not available."),
        ),
    ],
)
def test_single_line_replies(line: str, expected: AgiReply) -> None:
    connection = _after_commands(1)
    connection.receive_data(line.encode() + b"\n")

    assert connection.next_event() == expected
    assert connection.pending_commands == 0
    assert expected.ok is (expected.code == 200)


def test_multi_line_520_carries_its_usage_text() -> None:
    connection = _after_commands(1)
    connection.receive_data(USAGE_520.encode())

    reply = connection.next_event()

    assert reply == AgiReply(
        520,
        "Invalid command syntax.  Proper usage follows:",
        usage="Returns 0 if variablename is not set. Returns 1 if variablename is set\n"
        "and returns the variable in parentheses.\n"
        "Example return code: 200 result=1 (testvariable)",
    )
    assert connection.pending_commands == 0


def test_520_whose_closing_line_is_glued_to_the_usage_text() -> None:
    # Usage texts built from the XML docs have no final LF (seen from real Asterisks).
    glued = USAGE_520.replace("(testvariable)\n520 End", "(testvariable)520 End")
    connection = _after_commands(1)
    connection.receive_data(glued.encode())

    reply = connection.next_event()

    assert isinstance(reply, AgiReply)
    assert reply.code == 520
    assert reply.usage.endswith("Example return code: 200 result=1 (testvariable)")


def test_520_fed_byte_by_byte_completes_only_at_its_last_line() -> None:
    connection = _after_commands(1)
    data = USAGE_520.encode()
    for i in range(len(data) - 1):
        connection.receive_data(data[i : i + 1])
        assert connection.next_event() is NEED_DATA
    connection.receive_data(data[-1:])

    reply = connection.next_event()

    assert isinstance(reply, AgiReply)
    assert reply.code == 520


def test_hangup_line_arrives_between_replies_and_the_reply_still_follows() -> None:
    connection = _after_commands(2)
    connection.receive_data(b"200 result=1\nHANGUP\n200 result=1\n")

    events = _events(connection)

    assert events == [
        AgiReply(200, "result=1", result=1),
        ChannelHungUp(),
        AgiReply(200, "result=1", result=1),
    ]
    assert connection.pending_commands == 0


def test_hangup_may_arrive_with_no_command_waiting() -> None:
    connection = _after_commands(0)
    connection.receive_data(b"HANGUP\n")

    assert connection.next_event() == ChannelHungUp()


def test_interim_reply_does_not_complete_the_command() -> None:
    connection = _after_commands(1)
    connection.receive_data(b"100 result=0 Trying...\n200 result=1\n")

    first, second = _events(connection)

    assert isinstance(first, AgiReply)
    assert first.code == 100
    assert second == AgiReply(200, "result=1", result=1)
    assert connection.pending_commands == 0


@pytest.mark.parametrize(
    ("pending", "data", "problem"),
    [
        (0, b"200 result=1\n", "no command waiting"),
        (1, b"200 result=yes\n", "malformed AGI 200 reply"),
        (1, b"200 result=1 trailing words\n", "malformed AGI 200 reply"),
        # found by fuzzing: int() raised ValueError on more than 4300 digits
        (1, b"200 result=" + b"7" * 4301 + b"\n", "malformed AGI 200 reply"),
        (1, b"200 result=1 endpos=-" + b"7" * 4301 + b"\n", "malformed AGI 200 reply"),
        (1, b"200 result=" + b"9" * 20 + b"\n", "malformed AGI 200 reply"),
        (1, b"OK\n", "not an AGI reply"),
        (1, b"510-Invalid\n", "unexpected multi-line"),
        (1, b"200 result=1 (" + b"x" * 20000, "longer than"),
        (1, b"520-Invalid command syntax.\n" + b"usage line\n" * 2000, "longer than"),
    ],
)
def test_what_is_not_an_agi_reply_is_refused(pending: int, data: bytes, problem: str) -> None:
    connection = _after_commands(pending)
    connection.receive_data(data)

    with pytest.raises(AgiProtocolError, match=problem):
        _events(connection)


def test_asterisk_closing_after_the_replies_is_a_clean_close() -> None:
    connection = _after_commands(1)
    connection.receive_data(b"200 result=1\n")
    connection.receive_data(b"")

    assert _events(connection) == [AgiReply(200, "result=1", result=1), CLOSED]


@pytest.mark.parametrize("data", [b"200 resu", b"520-Invalid command syntax.\nUsage\n"])
def test_asterisk_closing_in_the_middle_of_a_reply_is_an_error(data: bytes) -> None:
    connection = _after_commands(1)
    connection.receive_data(data)
    connection.receive_data(b"")

    with pytest.raises(AgiProtocolError, match="middle of an AGI reply"):
        _events(connection)


@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_split_of_a_whole_conversation_yields_the_same_events(cuts: list[int]) -> None:
    replies = b"200 result=1\n" + USAGE_520.encode() + b"HANGUP\n200 result=1 (x) endpos=3\n"
    stream = TRANSCRIPT + replies
    connection = AgiConnection()
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    events: list[AgiEvent] = []
    for start, end in itertools.pairwise(bounds):
        if start == end:  # an empty read would mean end of stream
            continue
        connection.receive_data(stream[start:end])
        while (event := connection.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, AgiEnvironment):
                for _ in range(3):
                    connection.send(AgiCommand.get_variable("X"))

    assert [type(e).__name__ for e in events] == [
        "AgiEnvironment",
        "AgiReply",
        "AgiReply",
        "ChannelHungUp",
        "AgiReply",
    ]
    assert [e.code for e in events if isinstance(e, AgiReply)] == [200, 520, 200]


def test_set_variable_is_encoded_as_res_agi_expects() -> None:
    command = AgiCommand.set_variable("PBXGUARD_VERDICT", "deny")

    assert command.wire == b'SET VARIABLE PBXGUARD_VERDICT "deny"\n'
    assert command.verb == "SET VARIABLE"


def test_values_with_quotes_backslashes_and_chinese_text_are_escaped() -> None:
    command = AgiCommand.set_variable("PBXGUARD_REASON", '国际长途 "LD-2" C:\\temp')

    assert command.line == 'SET VARIABLE PBXGUARD_REASON "国际长途 \\"LD-2\\" C:\\\\temp"'


_ARGUMENT_TEXT = st.text(
    alphabet=st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]),
    max_size=200,
)


@given(value=_ARGUMENT_TEXT)
def test_res_agi_reads_back_exactly_the_value_that_was_set(value: str) -> None:
    command = AgiCommand.set_variable("PBXGUARD_REASON", value)

    assert parse_agi_args(command.line) == ["SET", "VARIABLE", "PBXGUARD_REASON", value]


@given(message=_ARGUMENT_TEXT)
def test_verbose_message_survives_res_agi_parsing(message: str) -> None:
    command = AgiCommand.verbose(message, 3)

    assert parse_agi_args(command.line) == ["VERBOSE", message, "3"]


def test_text_with_no_utf8_form_is_refused_not_crashed_on() -> None:
    """Found by fuzzing: a lone surrogate raised UnicodeEncodeError out of the constructors."""
    for build in (
        lambda: AgiCommand.set_variable("PBXGUARD_REASON", "caf\udce9"),
        lambda: AgiCommand.verbose("\ud800"),
        lambda: AgiCommand.hangup("PJSIP/2001-\udc80"),
    ):
        with pytest.raises(AgiProtocolError, match="not valid Unicode"):
            build()


def test_the_largest_results_are_still_read() -> None:
    connection = _after_commands(1)
    connection.receive_data(b"200 result=-" + b"9" * 19 + b" (x) endpos=" + b"9" * 19 + b"\n")

    (reply,) = _events(connection)

    assert reply == AgiReply(
        200,
        "result=-" + "9" * 19 + " (x) endpos=" + "9" * 19,
        result=-int("9" * 19),
        data="x",
        endpos=int("9" * 19),
    )


@pytest.mark.parametrize("value", ["allow\nSET VARIABLE X 1", "a\rb", "nul\x00byte", "\n"])
def test_line_breaks_and_nul_are_refused_in_values(value: str) -> None:
    with pytest.raises(AgiProtocolError, match="CR, LF or NUL"):
        AgiCommand.set_variable("PBXGUARD_REASON", value)
    with pytest.raises(AgiProtocolError, match="CR, LF or NUL"):
        quote_argument(value)
    with pytest.raises(AgiProtocolError, match="CR, LF or NUL"):
        AgiCommand.verbose(value)


@pytest.mark.parametrize(
    "name", ["", "1ABC", "X Y", "X\nY", 'X"', "X=1", "CDR(user field)", "___X", "X)"]
)
def test_invalid_variable_names_are_refused(name: str) -> None:
    with pytest.raises(AgiProtocolError, match="not a channel variable name"):
        AgiCommand.set_variable(name, "v")
    with pytest.raises(AgiProtocolError, match="not a channel variable name"):
        AgiCommand.get_variable(name)


@pytest.mark.parametrize("name", ["PBXGUARD_VERDICT", "__PBXGUARD_RULE", "_X1", "CDR(userfield)"])
def test_valid_variable_names_are_kept_bare(name: str) -> None:
    assert AgiCommand.get_variable(name).line == f"GET VARIABLE {name}"


def test_a_command_longer_than_res_agi_reads_is_refused() -> None:
    overhead = len('SET VARIABLE X ""\n')
    AgiCommand.set_variable("X", "v" * (MAX_COMMAND_BYTES - overhead))

    with pytest.raises(AgiProtocolError, match="longer than"):
        AgiCommand.set_variable("X", "v" * (MAX_COMMAND_BYTES - overhead + 1))


def test_other_commands() -> None:
    assert AgiCommand.verbose("pbxguard: deny LD-2").wire == b'VERBOSE "pbxguard: deny LD-2" 1\n'
    assert AgiCommand.hangup().wire == b"HANGUP\n"
    assert AgiCommand.hangup("PJSIP/2001-00000007").wire == b"HANGUP PJSIP/2001-00000007\n"
    with pytest.raises(AgiProtocolError, match="level"):
        AgiCommand.verbose("x", 5)
    with pytest.raises(AgiProtocolError, match="not a channel name"):
        AgiCommand.hangup("PJSIP/2001 HANGUP")
    with pytest.raises(AgiProtocolError, match="CR, LF or NUL"):
        AgiCommand("NOOP", "NOOP\nHANGUP")


def test_failure_line_is_what_res_agi_reads_as_a_failed_script() -> None:
    assert AgiConnection().send_failure() == b"failure\n"


def test_the_test_client_environment_matches_the_transcript_shape() -> None:
    """The integration tests' client must send what this file's transcript shows."""
    sent = environment_bytes(callerid="2003", calleridname="张伟", extension="02112345678")
    connection = AgiConnection()
    connection.receive_data(sent)
    env = connection.next_event()

    assert isinstance(env, AgiEnvironment)
    assert list(env.variables) == [
        key.decode() for key in (line.split(b":")[0] for line in TRANSCRIPT.split(b"\n")) if key
    ]
    assert env.args == ("2003", "02112345678")


# --- fuzzing: whatever arrives on the socket --------------------------------------------------

# Pieces of real conversations (a fuzzing dictionary) mixed with arbitrary bytes, so that the
# generated streams get past the first line often enough to reach the reply states.
_AGI_PIECES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [
            *(line + b"\n" for line in TRANSCRIPT.split(b"\n")[:-2]),
            b"\n",
            b"\r\n",
            b"agi_arg_",
            b"agi_arg_1: ",
            b"200 result=",
            b"200 result=1 (",
            b") endpos=",
            b"200 result=-1\n",
            b"520-Invalid command syntax.  Proper usage follows:\n",
            b"520 End of proper usage.\n",
            b"510 Invalid or unknown command\n",
            b"511 Command Not Permitted on a dead channel or intercept routine\n",
            b"100 result=0 Trying...\n",
            b"HANGUP\n",
            "张伟".encode(),
            b"\xe5\xbc",
            b"\xff",
            b"\x00",
        ]
    ),
)
# Numbers as they appear in replies and argument keys, from short to absurdly long.
_DIGITS = st.one_of(
    st.integers(0, 10**6).map(lambda n: str(n).encode()),
    st.integers(0, 6000).map(lambda n: b"7" * n),
)
# Whole lines shaped like the protocol's, with their fields generated.
_ENVIRONMENT_LINES = st.builds(
    lambda key, value: key + b": " + value + b"\n",
    st.one_of(
        st.sampled_from([b"agi_request", b"agi_channel", b"agi_uniqueid", b"agi_callerid"]),
        _DIGITS.map(lambda digits: b"agi_arg_" + digits),
    ),
    st.one_of(st.binary(max_size=12), _DIGITS),
)
_REPLY_LINES = st.builds(
    lambda code, separator, text: code + separator + text + b"\n",
    st.sampled_from([b"200", b"510", b"511", b"520", b"100", b"999", b"20", b"2000"]),
    st.sampled_from([b" ", b"-"]),
    st.one_of(
        _DIGITS.map(lambda digits: b"result=-" + digits),
        st.tuples(_DIGITS, st.binary(max_size=8), _DIGITS).map(
            lambda t: b"result=" + t[0] + b" (" + t[1] + b") endpos=" + t[2]
        ),
        st.binary(max_size=12),
    ),
)
_ANY_PIECE = st.one_of(_AGI_PIECES, _ENVIRONMENT_LINES, _REPLY_LINES)
AGI_STREAMS = st.one_of(
    # anything at all
    st.lists(_ANY_PIECE, max_size=30).map(b"".join),
    # a real environment going on with generated lines, then generated replies
    st.tuples(
        st.lists(_ENVIRONMENT_LINES, max_size=4),
        st.lists(st.one_of(_REPLY_LINES, _ANY_PIECE), max_size=6),
    ).map(lambda t: TRANSCRIPT[:-1] + b"".join(t[0]) + b"\n" + b"".join(t[1])),
    # a real environment, then anything
    st.lists(_ANY_PIECE, max_size=30).map(lambda pieces: TRANSCRIPT + b"".join(pieces)),
)


def _converse(
    data: bytes, cuts: list[int], commands: int, *, limit: int
) -> list[AgiEvent | tuple[str, str]]:
    """Feed ``data`` in the pieces ``cuts`` makes, answering the environment with commands."""
    connection = AgiConnection(max_environment_bytes=limit, max_reply_bytes=limit)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    reads = [data[a:b] for a, b in itertools.pairwise(bounds) if a < b] + [b""]
    out: list[AgiEvent | tuple[str, str]] = []
    for read in reads:
        connection.receive_data(read)
        while True:
            try:
                event = connection.next_event()
            except AgiProtocolError as exc:
                out.append(("error", str(exc)))
                return out
            if event is NEED_DATA:
                break
            out.append(event)
            if event is CLOSED:
                return out
            if isinstance(event, AgiEnvironment):
                for _ in range(commands):
                    connection.send(AgiCommand.verbose("pbxguard"))
    raise AssertionError("the end of the stream was not reported")


@given(
    data=AGI_STREAMS,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    commands=st.integers(0, 4),
    limit=st.sampled_from([DEFAULT_MAX_ENVIRONMENT_BYTES, 1024, 64]),
)
def test_fuzz_any_bytes_give_events_or_a_protocol_error_whatever_the_split(
    data: bytes, cuts: list[int], commands: int, limit: int
) -> None:
    """Only AgiProtocolError ever comes out, and the reads' boundaries change nothing."""
    whole = _converse(data, [], commands, limit=limit)
    assert _converse(data, cuts, commands, limit=limit) == whole
    for event in whole:
        if isinstance(event, AgiReply):
            assert 100 <= event.code <= 999
        if isinstance(event, AgiEnvironment):
            assert event.request
            assert all(isinstance(a, str) for a in event.args)


# Any code point, lone surrogates included (a string decoded with surrogateescape has them).
# (st.text() never yields them, so the characters are joined by hand.)
_ANY_TEXT = st.lists(
    st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=300
).map("".join)


@given(name=_ANY_TEXT, value=_ANY_TEXT, level=st.integers(-2, 6))
def test_fuzz_commands_are_built_or_refused_never_broken(name: str, value: str, level: int) -> None:
    """Anything a caller controls ends in one well-formed command line or an AgiProtocolError."""
    for build in (
        lambda: AgiCommand.set_variable(name, value),
        lambda: AgiCommand.get_variable(name),
        lambda: AgiCommand.verbose(value, level),
        lambda: AgiCommand.hangup(value),
    ):
        try:
            command = build()
        except AgiProtocolError:
            continue
        wire = command.wire
        assert wire.endswith(b"\n")
        assert wire.count(b"\n") == 1
        assert b"\x00" not in wire
        assert b"\r" not in wire
        assert len(wire) <= MAX_COMMAND_BYTES


def test_a_nul_sent_by_a_client_arrives_as_a_visible_symbol() -> None:
    """Asterisk never sends NUL; a hostile client may. It must not reach PostgreSQL's text."""
    data = TRANSCRIPT.replace(b"agi_arg_2: 02112345678", b"agi_arg_2: 0044\x001632960123")
    _, env = _environment(data)
    assert env.args == ("2003", "0044\u24001632960123")
    assert "\x00" not in repr(env.args)
