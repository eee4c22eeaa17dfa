"""The sample dialplan's no-verdict branch, run step by step on the numbers it must judge.

No Asterisk runs here: this reads the ``noverdict`` priorities of ``[pbxguard-check]`` from
``asterisk-config/extensions.conf`` and steps through them, understanding exactly the few
applications and functions they use (``Set``, ``ExecIf``, ``GotoIf``, ``Goto``, ``REGEX``,
``${var:offset:length}``, ``$[a = b]`` and ``$[a & b]``). A priority it does not understand
fails the test, so a change to that branch is either understood here or noticed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

EXTENSIONS_CONF = Path(__file__).parents[2] / "asterisk-config/extensions.conf"


def _context(text: str, name: str) -> str:
    """Return the body of the context ``[name]`` (up to the next context)."""
    match = re.search(rf"^\[{re.escape(name)}\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, name
    return match.group(1)


def _config() -> tuple[dict[str, str], list[tuple[str | None, str]]]:
    """Return the [globals] and the (label, application) priorities of the noverdict branch."""
    text = EXTENSIONS_CONF.read_text("utf-8")
    globals_ = dict(re.findall(r"^([A-Z_]+) = (.*)$", _context(text, "globals"), re.MULTILINE))
    check = _context(text, "pbxguard-check")
    steps: list[tuple[str | None, str]] = []
    started = False
    for line in check.splitlines():
        match = re.match(r"^\s*same => n(?:\((\w+)\))?,(.*)$", line)
        if match is None:
            continue
        label, application = match.group(1), match.group(2)
        started = started or label == "noverdict"
        if started and label in (None, "noverdict"):
            steps.append((label, application))
        elif started:
            break
    return globals_, steps


GLOBALS, STEPS = _config()


def _expand(text: str, variables: dict[str, str]) -> str:
    """Substitute ${REGEX("re" s)}, ${var:offset[:length]} and ${var}, innermost first."""
    while "${" in text:
        start = text.rindex("${")
        end = text.index("}", start)
        inner = text[start + 2 : end]
        regex = re.fullmatch(r'REGEX\("(.*)" (.*)\)', inner)
        if regex:
            value = "1" if re.search(regex.group(1), regex.group(2)) else "0"
        elif ":" in inner:
            name, *numbers = inner.split(":")
            offset = int(numbers[0])
            value = variables[name][offset:]
            if len(numbers) > 1:
                length = int(numbers[1])
                value = value[:length]
        else:
            value = variables[inner]
        text = text[:start] + value + text[end + 1 :]
    return text


def _true(condition: str) -> bool:
    """Evaluate a GotoIf/ExecIf condition: a number, or $[a = b], $[a & "x" != "y"]."""
    expression = re.fullmatch(r"\$\[(.*)\]", condition)
    if expression is None:
        return condition not in ("", "0")
    body = expression.group(1)
    equal = re.fullmatch(r"(\S+) = (\S+)", body)
    if equal:
        return equal.group(1) == equal.group(2)
    both = re.fullmatch(r'(\S+) & "(.*)" != "(.*)"', body)
    if both:
        return both.group(1) not in ("", "0") and both.group(2) != both.group(3)
    raise AssertionError(f"expression not understood: {condition}")


def fail_mode(number: str, ld_failmode: str = "closed") -> str:
    """Return where the noverdict branch sends ``number``: ``go`` or ``closed``."""
    variables = {**GLOBALS, "number": number, "AGISTATUS": "FAILURE"}
    variables["PBXGUARD_LD_FAILMODE"] = ld_failmode
    for _label, application in STEPS:
        if application.startswith("NoOp("):
            continue
        assignment = re.fullmatch(r"Set\(LOCAL\((\w+)\)=(.*)\)", application)
        if assignment:
            variables[assignment.group(1)] = _expand(assignment.group(2), variables)
            continue
        exec_if = re.fullmatch(r"ExecIf\((.*)\?Set\(LOCAL\((\w+)\)=(.*)\)\)", application)
        if exec_if:
            if _true(_expand(exec_if.group(1), variables)):
                variables[exec_if.group(2)] = _expand(exec_if.group(3), variables)
            continue
        goto_if = re.fullmatch(r"GotoIf\((.*)\?(\w+)\)", application)
        if goto_if:
            if _true(_expand(goto_if.group(1), variables)):
                return goto_if.group(2)
            continue
        goto = re.fullmatch(r"Goto\((\w+)\)", application)
        if goto:
            return goto.group(1)
        raise AssertionError(f"priority not understood: {application}")
    raise AssertionError("the noverdict branch fell through")


def test_the_branch_is_found() -> None:
    assert STEPS[0][0] == "noverdict"
    assert len(STEPS) >= 8
    assert GLOBALS["PBXGUARD_LOCAL_AREA"] == "21"


@pytest.mark.parametrize(
    ("number", "where"),
    [
        # the classes of docs/asterisk.md §5
        ("62345678", "go"),
        ("02112345678", "go"),
        ("13800138000", "go"),
        ("95588", "go"),
        ("10086", "go"),
        ("01087654321", "closed"),
        ("0085223456789", "closed"),
        ("+441632960123", "closed"),
        ("00441632960123", "closed"),
        ("16812345678", "closed"),
        ("17951 00441632960123".replace(" ", ""), "closed"),
        ("1795113800138000", "go"),
        # a final # ends dialling: judged as the number before it
        ("13800138000#", "go"),
        ("110#", "go"),
        ("00441632960123#", "closed"),
        ("16812345678#", "closed"),
        ("01087654321#", "closed"),
        # any other * or #, or a misplaced +: closed whatever the digits
        ("0044*1632960123", "closed"),
        ("1380013*8000", "closed"),
        ("13800138000##", "closed"),
        ("13800138000#1", "closed"),
        ("138#00138000", "closed"),
        ("0*72", "closed"),
        ("9*72", "closed"),
        ("1380013+8000", "closed"),
        ("13800138000p1", "closed"),
        ("13800138000,1", "closed"),
        ("#", "closed"),
        ("+#", "closed"),
    ],
)
def test_with_no_verdict_the_dialplan_decides_by_class(number: str, where: str) -> None:
    assert fail_mode(number) == where


def test_domestic_long_distance_follows_its_setting() -> None:
    assert fail_mode("01087654321", ld_failmode="open") == "go"
    assert fail_mode("01087654321#", ld_failmode="open") == "go"
    assert fail_mode("0108765*4321", ld_failmode="open") == "closed"
