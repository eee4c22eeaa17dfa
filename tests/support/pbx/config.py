"""Install the project's ``asterisk-config/`` into an unpacked bundle, adapted to a test run.

Only what must differ on a loopback test PBX is changed: ports, secrets and passwords, the
carrier's address (a pjsua "carrier" on 127.0.0.1 instead of a registrar on the internet), and
a shorter qualify interval for the watched phones so a dead duty phone is noticed in seconds.
The dialplan's logic is installed exactly as shipped. Each change names the text it replaces
and fails loudly when that text is not there exactly once: a reshaped sample must not quietly
leave the tier testing something else.

What the tier adds lives in files of its own, pulled in with ``#include`` at the end of the
shipped files: a test-only context that dials the trunk without the pre-dial step (the AMI
safety net's target) and its phone, and an AMI account that may ``Originate``.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "asterisk-config"
HOST = "127.0.0.1"

#: The phones of the shipped pjsip.conf that the tier registers.
PHONES = ("2001", "2002", "2003", "8000", "8001", "8002", "9001")
#: A phone the tier adds, in the test-only context that dials the trunk directly.
BYPASS_PHONE = "2999"
#: Every phone in that context: 2999 (missing from the directory) and two with people of their
#: own in the tier's policy, so the fault tests can tell who made each call.
BYPASS_PHONES = (BYPASS_PHONE, "2998", "2997")
#: The DID the shipped [from-carrier] routes to the hotline phones 8001 and 8002.
HOTLINE_DID = "0215550100"
#: Seconds between qualify requests to the watched phones (shipped: 10).
WATCHED_QUALIFY = 2
#: The AMI account only the tests use (Originate, and reading what the PBX answers).
TIER_AMI_USER = "tier"


class ConfigMismatch(Exception):
    """A shipped file no longer holds the text an adaptation replaces."""


def free_udp_port() -> int:
    """Return a UDP port on 127.0.0.1 that nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Ports:
    """Every port of one test site, chosen at run time."""

    sip: int
    ami: int
    agi: int
    proxy: int
    carrier: int
    phones: dict[str, int]
    rtp_start: int
    rtp_end: int

    @classmethod
    def choose(cls, *, apart_from: Ports | None = None) -> Ports:
        """Pick free ports for Asterisk, the proxy, pbxguard and the pjsua phones.

        ``apart_from``: another site's ports, whose RTP range (and its phones' RTP ports just
        above it) this site's must not overlap.
        """
        phones = {ext: free_udp_port() for ext in (*PHONES, *BYPASS_PHONES)}
        rtp_start = 20000 + secrets.randbelow(200) * 200
        while apart_from is not None and abs(rtp_start - apart_from.rtp_start) < 800:
            rtp_start = 20000 + secrets.randbelow(200) * 200
        return cls(
            sip=free_udp_port(),
            ami=free_tcp_port(),
            agi=free_tcp_port(),
            proxy=free_tcp_port(),
            carrier=free_udp_port(),
            phones=phones,
            rtp_start=rtp_start,
            rtp_end=rtp_start + 199,
        )

    def phone_rtp(self, index: int) -> int:
        """Return the first RTP port of the ``index``-th pjsua (an even port above Asterisk's)."""
        return self.rtp_end + 1 + 20 * index + (self.rtp_end + 1) % 2


@dataclass(frozen=True, slots=True)
class Secrets:
    """Passwords and AMI secrets of one test site, generated afresh."""

    ami: str = field(default_factory=lambda: secrets.token_hex(12))
    tier_ami: str = field(default_factory=lambda: secrets.token_hex(12))
    phones: dict[str, str] = field(
        default_factory=lambda: {e: secrets.token_hex(6) for e in (*PHONES, *BYPASS_PHONES)}
    )


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    count = text.count(old)
    if count != 1:
        raise ConfigMismatch(f"{where}: expected {old!r} exactly once, found it {count} times")
    return text.replace(old, new)


def _drop_section(text: str, header: str, where: str) -> str:
    """Remove one ``[header]`` section: its header line and every line up to the next one."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    if len(starts) != 1:
        raise ConfigMismatch(f"{where}: expected one {header} section, found {len(starts)}")
    start = starts[0]
    end = start + 1
    while end < len(lines) and not lines[end].startswith("["):
        end += 1
    return "".join(lines[:start] + lines[end:])


def extensions_conf(ports: Ports) -> str:
    """The shipped dialplan, with pbxguard's FastAGI address set to this run's port."""
    where = "extensions.conf"
    text = (SHIPPED / where).read_text("utf-8")
    text = _replace_once(
        text,
        "PBXGUARD_AGI = agi://127.0.0.1:4573",
        f"PBXGUARD_AGI = agi://{HOST}:{ports.agi}",
        where,
    )
    return text + "\n#include extensions_tier.conf\n"


EXTENSIONS_TIER = """\
; Installed by the real-PBX test tier only; not part of the shipped dialplan.
;
; A context that dials the trunk with no pbxguard step, as a forgotten or edited context
; would: the calls that the AMI safety net must hang up before the carrier answers. Its phones
; (2999, 2998, 2997) reach the other phones, so they can also hand a call over with a blind
; transfer, which Asterisk runs in the transferer's context.
; (Included, not written here: a context's own patterns win over its includes, and
; _[+0-9]. would take the extensions too.)
[bypass-test]
include => internal-extensions
include => bypass-trunk

[bypass-trunk]
exten => _[+0-9].,1,Dial(PJSIP/${EXTEN}@${OUTBOUND_TRUNK},60)
 same => n,Hangup()
"""


def pjsip_conf(ports: Ports, site_secrets: Secrets) -> str:
    """The shipped phones and trunk on this run's ports, with the carrier on loopback."""
    where = "pjsip.conf"
    text = (SHIPPED / where).read_text("utf-8")
    text = _replace_once(text, "bind = 0.0.0.0:5060", f"bind = {HOST}:{ports.sip}", where)
    for ext in PHONES:
        text = _replace_once(
            text,
            f"password = CHANGE-ME-{ext}",
            f"password = {site_secrets.phones[ext]}",
            where,
        )
    text = _replace_once(
        text,
        "[watched-aor](!,phone-aor)\nqualify_frequency = 10",
        f"[watched-aor](!,phone-aor)\nqualify_frequency = {WATCHED_QUALIFY}",
        where,
    )
    # pjsua cannot be a registrar: the trunk is reached at its address instead of registering.
    text = _drop_section(text, "[carrier-registration]", where)
    text = _replace_once(
        text,
        "contact = sip:sip.carrier.example.net",
        f"contact = sip:{HOST}:{ports.carrier}",
        where,
    )
    # The phones share the carrier's address here, so the carrier is told apart by its port.
    text = _replace_once(text, "match = 203.0.113.10", f"match = {HOST}:{ports.carrier}", where)
    return text + "\n#include pjsip_tier.conf\n"


def _bypass_phone(ext: str, password: str) -> str:
    return f"""\
[{ext}](phone-endpoint)
context = bypass-test
auth = {ext}
aors = {ext}
callerid = "Bypass test" <{ext}>
[{ext}](phone-auth)
username = {ext}
password = {password}
[{ext}](phone-aor)
"""


def pjsip_tier_conf(site_secrets: Secrets) -> str:
    """The bypass phones, built from the shipped templates."""
    head = "; Installed by the real-PBX test tier only: phones in the test context [bypass-test].\n"
    return head + "".join(_bypass_phone(e, site_secrets.phones[e]) for e in BYPASS_PHONES)


def manager_conf(ports: Ports, site_secrets: Secrets) -> str:
    """The shipped AMI account on this run's port and secret, plus the tests' own account."""
    where = "manager.conf"
    text = (SHIPPED / where).read_text("utf-8")
    text = _replace_once(text, "port = 5038", f"port = {ports.ami}", where)
    text = _replace_once(
        text,
        "secret = CHANGE-ME-to-a-long-random-secret",
        f"secret = {site_secrets.ami}",
        where,
    )
    return (
        text
        + f"""
; Installed by the real-PBX test tier only: the tests' own account, which may Originate.
[{TIER_AMI_USER}]
secret = {site_secrets.tier_ami}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
"""
    )


def rtp_conf(ports: Ports) -> str:
    """RTP ports of this run only."""
    return f"[general]\nrtpstart = {ports.rtp_start}\nrtpend = {ports.rtp_end}\n"


LOGGER_CONF = """\
[general]
dateformat = %F %T.%3q
[logfiles]
messages => notice,warning,error
full => notice,warning,error,verbose(5),dtmf
"""


def install(etc: Path, ports: Ports, site_secrets: Secrets) -> None:
    """Write the site's configuration into the bundle's ``etc/asterisk``.

    Raises:
        ConfigMismatch: a shipped file changed shape (see :func:`_replace_once`).
    """
    files = {
        "extensions.conf": extensions_conf(ports),
        "extensions_tier.conf": EXTENSIONS_TIER,
        "pjsip.conf": pjsip_conf(ports, site_secrets),
        "pjsip_tier.conf": pjsip_tier_conf(site_secrets),
        "manager.conf": manager_conf(ports, site_secrets),
        "rtp.conf": rtp_conf(ports),
        "logger.conf": LOGGER_CONF,
    }
    for name, content in files.items():
        (etc / name).write_text(content, "utf-8")
