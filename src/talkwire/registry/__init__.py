"""Where signaling and transceivers share state: in memory (one process) or Redis."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from talkwire.errors import ConfigError

if TYPE_CHECKING:
    from talkwire.registry.redis_registry import RedisRegistry


# Through the environment, like every other secret: a password inside a
# redis:// URL would sit on argv or in a config file.
REDIS_PASSWORD_ENV = "TALKWIRE_REDIS_PASSWORD"  # noqa: S105 - the variable's name


def redis_password() -> str | None:
    """The Redis password from ``$TALKWIRE_REDIS_PASSWORD``, if set (a password
    in the URL itself still wins)."""
    return os.environ.get(REDIS_PASSWORD_ENV) or None


def check_registry_url(url: str) -> None:
    """ConfigError unless ``url`` names a registry this install can open."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"registry URL must be redis://HOST:PORT/DB, got {url!r}")
    try:
        # Only now: redis is the optional talkwire[redis] extra.
        import redis  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ConfigError(f"a Redis registry needs talkwire[redis]: {exc}") from None


def open_registry(url: str) -> RedisRegistry:
    """The shared registry at ``url`` (``redis://…``); it connects on first use."""
    check_registry_url(url)
    from talkwire.registry.redis_registry import RedisRegistry  # noqa: PLC0415

    return RedisRegistry.from_url(url)
