"""pbxguard: telephone regulations enforced on live Asterisk calls."""

__version__ = "0.1.0"
