"""One TOML file for a fleet's processes: each command reads its own table.

    # talkwire.toml
    [relay]
    listen = ["0.0.0.0:3478", "[::]:3478"]
    internal = "10.0.0.2:3479"
    workers = 2
    flow-cache = "redis://redis:6379/0"

    [transceiver]
    region = "eu"

    [agent.echo]
    listen = "0.0.0.0:8090"

``talkwire relay --config talkwire.toml`` (or ``$TALKWIRE_CONFIG``) runs as
if the table's keys had been given as flags before the command line's own:
a key is a long flag without its dashes, a list repeats the flag, ``true``
gives a switch and ``false`` leaves it out. So every check, default and error
message is the flag's, and a flag on the command line wins over the file (a
repeatable flag adds to it). ``[agent]`` applies to every agent,
``[agent.NAME]`` to one. Secrets stay out of it: they come from their own
files or the environment (``--keyring``, ``--api-key-file``,
``$TALKWIRE_INTERNAL_SECRET``).

Sans-IO: the file's text in, arguments out.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from talkwire.errors import ConfigError

CONFIG_ENV = "TALKWIRE_CONFIG"


def table_arguments(
    text: str, where: str, path: Sequence[str], known_flags: Collection[str]
) -> list[str]:
    """The flags that the tables at ``path`` (``["agent", "echo"]``: ``[agent]``
    then ``[agent.echo]``) of TOML ``text`` stand for. ConfigError names the
    file (``where``) and key of anything wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not TOML: {exc}") from None
    arguments: list[str] = []
    table: Any = data
    for depth, name in enumerate(path):
        table = table.get(name, {}) if isinstance(table, Mapping) else {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{'.'.join(path[: depth + 1])}] must be a table")
        section = ".".join(path[: depth + 1])
        for key, value in table.items():
            if isinstance(value, Mapping):
                continue  # a sub-table: another command's, or read at the next depth
            arguments += _flag(key, value, f"{where} [{section}]", known_flags)
    return arguments


def _flag(key: str, value: object, where: str, known_flags: Collection[str]) -> list[str]:
    flag = f"--{key}"
    if flag not in known_flags or flag == "--config":
        raise ConfigError(f"{where}: unknown key {key!r} (not a flag of this command)")
    if isinstance(value, bool):
        return [flag] if value else []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(f"{where}: {key!r} must be a string, number or a list of them")
        out += [flag, str(item)]
    return out
