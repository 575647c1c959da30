"""One error family for the whole package; each codec has its own subclass."""


class TalkwireError(Exception):
    """Base of every error talkwire raises on purpose."""


class ConfigError(TalkwireError):
    """Bad command-line or configuration input; the message names the problem."""


class StunError(TalkwireError, ValueError):
    """A datagram claimed to be STUN but is malformed."""


class StunMissingUsername(StunError):
    """A well-formed binding request that carries no USERNAME."""


class TokenError(TalkwireError, ValueError):
    """A route token is malformed, unknown or fails its MAC."""


class EncapError(TalkwireError, ValueError):
    """A relay-transceiver encapsulation header is malformed."""


class ProtocolError(TalkwireError, ValueError):
    """An internal-protocol message (agent link) is malformed."""
