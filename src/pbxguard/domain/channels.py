"""Which channels are phones and which are outbound trunk legs: site configuration.

The recorded test PBX dials out through ``Local/<number>@pstn-…;1`` with a dial string
``<number>@pstn``; a production PBX uses a trunk channel such as ``PJSIP/carrier-0000002a``
with ``<number>@carrier`` or ``carrier/<number>``. None of this is a constant: a `ChannelPlan`
is built from the site's ``[pbx]`` settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pbxguard.errors import PolicyError


def _compile(pattern: str, group: str, what: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise PolicyError(
            f"{what} pattern {pattern!r} is not a valid regular expression: {exc}"
        ) from exc
    if group not in compiled.groupindex:
        raise PolicyError(f"{what} pattern {pattern!r} needs a named group (?P<{group}>...)")
    return compiled


@dataclass(frozen=True, slots=True)
class TrunkRoute:
    """How to recognise an outbound trunk leg and read the number it dials.

    Attributes:
        channel: regex on the leg's channel name; a ``number`` group is optional.
        dial_string: regex on the ``DialString`` with a ``number`` group.
        with_access_code: whether numbers read here may still carry the access code.
    """

    channel: re.Pattern[str]
    dial_string: re.Pattern[str]
    with_access_code: bool = False

    @classmethod
    def parse(cls, channel: str, dial_string: str, *, with_access_code: bool = False) -> TrunkRoute:
        """Compile a route from its two patterns.

        Raises:
            PolicyError: a pattern is not a valid regular expression or lacks its group.
        """
        try:
            channel_re = re.compile(channel)
        except re.error as exc:
            raise PolicyError(f"trunk channel pattern {channel!r} is invalid: {exc}") from exc
        return cls(channel_re, _compile(dial_string, "number", "dial string"), with_access_code)


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The site's channel naming: phone channels and trunk routes."""

    phones: tuple[re.Pattern[str], ...]
    trunks: tuple[TrunkRoute, ...]

    @classmethod
    def parse(cls, phones: list[str], trunks: list[tuple[str, str, bool]]) -> ChannelPlan:
        """Compile the plan from pattern strings.

        Raises:
            PolicyError: a pattern is invalid or lacks its named group.
        """
        return cls(
            tuple(_compile(p, "extension", "phone channel") for p in phones),
            tuple(TrunkRoute.parse(c, d, with_access_code=a) for c, d, a in trunks),
        )

    def phone_extension(self, channel: str) -> str | None:
        """Return the extension of a phone channel, or None when it is not a phone."""
        for pattern in self.phones:
            match = pattern.match(channel)
            if match is not None:
                return match.group("extension")
        return None

    def trunk_route(self, channel: str) -> TrunkRoute | None:
        """Return the first route whose channel pattern matches ``channel``."""
        for route in self.trunks:
            if route.channel.match(channel) is not None:
                return route
        return None

    @staticmethod
    def number_in_channel(route: TrunkRoute, channel: str) -> str | None:
        """Return the number carried in the channel name itself (``Local/<number>@...``)."""
        match = route.channel.match(channel)
        if match is None or "number" not in route.channel.groupindex:
            return None
        return match.group("number")

    def trunk_number(self, channel: str, dial_string: str) -> tuple[str, bool] | None:
        """Return (number, with_access_code) when ``channel`` is an outbound trunk leg."""
        for route in self.trunks:
            if route.channel.match(channel) is None:
                continue
            match = route.dial_string.match(dial_string)
            number = match.group("number") if match else self.number_in_channel(route, channel)
            if number:
                return number, route.with_access_code
        return None
