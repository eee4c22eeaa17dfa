"""Every error pbxguard raises on purpose.

Library errors never leak past the adapter that uses the library: each adapter converts them
into one of these, so callers handle one tree::

    PbxGuardError
    ├── ConfigError                  settings file or environment is unusable
    │   └── PolicyError              a policy file is invalid (carries file, line and problem)
    ├── ProtocolError                bytes on a wire that do not follow the protocol
    │   ├── AmiProtocolError
    │   │   └── AmiFrameTooLarge     a message grew past the frame limit without ending
    │   └── AgiProtocolError
    ├── AmiError                     talking to the Asterisk Manager Interface failed
    │   ├── AmiConnectionError       could not connect, or the connection was lost
    │   ├── AmiAuthenticationError   the PBX refused the login (retrying will not help)
    │   ├── AmiActionError           the PBX answered an action with Response: Error
    │   ├── AmiActionTimeout         no response to an action within its deadline
    │   └── UnsafeActionError        an action pbxguard refuses to send (e.g. a /regex/ channel)
    ├── LedgerError                  the fine ledger could not be read or written
    │   ├── LedgerUnavailable        the database is down, restarting or locked (retried)
    │   ├── LedgerConflict           an entry with the same key was written concurrently
    │   ├── LedgerIntegrityError     an attempt to change or delete a ledger entry
    │   └── JournalError             the write-ahead journal cannot be written or read
    ├── PublisherError               the MQTT broker could not be reached
    ├── AuthorizationCodeError       an authorization code could not be issued or checked
    └── RequestError                 a use case refused a request (what to change is in the text)
        ├── NotFound                 no such person, approval, offence, register entry …
        └── NotPermitted             the regulations (or the caller's scope) do not allow it
"""

from __future__ import annotations


class PbxGuardError(Exception):
    """Base of every error pbxguard raises on purpose."""


class ConfigError(PbxGuardError):
    """The settings file or the environment is unusable."""


class PolicyError(ConfigError):
    """A policy file is invalid.

    Attributes:
        path: the file, or ``None`` for a policy built in memory.
        line: 1-based line of the offending value, when known.
        problem: what is wrong, in words an administrator can act on.
    """

    def __init__(self, problem: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        self.problem = problem
        where = path or "<policy>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


class ProtocolError(PbxGuardError):
    """Bytes on a wire do not follow the protocol."""


class AmiProtocolError(ProtocolError):
    """An AMI message could not be framed or decoded."""


class AmiFrameTooLarge(AmiProtocolError):
    """An AMI message grew past the frame limit without its terminating blank line."""


class AgiProtocolError(ProtocolError):
    """A FastAGI conversation did not follow the protocol."""


class AmiError(PbxGuardError):
    """Talking to the Asterisk Manager Interface failed."""


class AmiConnectionError(AmiError):
    """Could not connect to AMI, or the connection was lost."""


class AmiAuthenticationError(AmiError):
    """The PBX refused the AMI login; retrying with the same secret will not help."""


class AmiActionError(AmiError):
    """The PBX answered an action with ``Response: Error``."""

    def __init__(self, action: str, message: str):
        self.action = action
        self.message = message
        super().__init__(f"AMI action {action} failed: {message}")


class AmiActionTimeout(AmiError):
    """No response to an AMI action arrived within its deadline."""


class UnsafeActionError(AmiError):
    """pbxguard refuses to send this action (for example a Hangup of a /regex/ channel)."""


class LedgerError(PbxGuardError):
    """The fine ledger could not be read or written."""


class LedgerUnavailable(LedgerError):
    """The ledger database is down or locked; writes are spooled and retried."""


class LedgerConflict(LedgerError):
    """An entry with the same key was written at the same time by someone else (retry)."""


class LedgerIntegrityError(LedgerError):
    """Something tried to change or delete a ledger entry, which is append-only."""


class JournalError(LedgerError):
    """The write-ahead journal in front of the ledger cannot be written or read."""


class PublisherError(PbxGuardError):
    """The MQTT broker could not be reached."""


class AuthorizationCodeError(PbxGuardError):
    """An authorization code could not be issued or checked."""


class RequestError(PbxGuardError):
    """A use case refused a request: the message says what to change, Chinese first."""


class NotFound(RequestError):
    """The request names something that does not exist (or that the caller may not see)."""


class NotPermitted(RequestError):
    """The regulations, or the caller's scope, do not allow the request."""
