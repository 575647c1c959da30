"""`talkwire` console entry point.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, and imports a module only when
its subcommand runs so that `talkwire token` does not pay for aiortc.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from talkwire.config_file import CONFIG_ENV, table_arguments
from talkwire.errors import ConfigError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("talkwire.up", "run signaling, relay, transceiver and the agents on one machine"),
    "relay": ("talkwire.relay.cli", "run the UDP relay (public ports -> transceivers)"),
    "transceiver": ("talkwire.transceiver.cli", "run a WebRTC transceiver"),
    "signaling": ("talkwire.signaling.cli", "run the OpenAI-compatible signaling server"),
    "agent": ("talkwire.agents.cli", "run a built-in agent (echo, voice)"),
    "token": ("talkwire.token_cli", "mint or inspect route tokens (server ICE ufrags)"),
    "loadtest": ("talkwire.loadtest", "open N real WebRTC calls and time their echo"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each subcommand's (so a config file can be checked against it)."""
    parser = argparse.ArgumentParser(prog="talkwire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for name, (_, help_text) in SUBCOMMANDS.items():
        if name not in _requested_or_all():
            sub.add_parser(name, help=help_text)
            continue
        # No abbreviated flags: "--conf FILE" must not slip past with_config_file.
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        add_command_arguments(p, name)
        commands[name] = p
    return parser, commands


def add_command_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Everything subcommand ``name`` accepts, ``--config`` included."""
    module = importlib.import_module(SUBCOMMANDS[name][0])
    module.add_arguments(parser)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"read flags from this TOML file's [{name}] table (default ${CONFIG_ENV})",
    )
    parser.set_defaults(_module=module)


def with_config_file(
    argv: Sequence[str], commands: dict[str, argparse.ArgumentParser]
) -> list[str]:
    """``argv`` with the config file's flags put right after the command, so
    the command line's own come later and win (``config_file``)."""
    index = next((i for i, a in enumerate(argv) if a in commands), None)
    if index is None:
        return list(argv)
    command, rest = argv[index], list(argv[index + 1 :])
    path = os.environ.get(CONFIG_ENV)
    for i, arg in enumerate(rest):
        if arg == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if not path:
        return list(argv)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    sub = commands[command]
    known = {flag for action in sub._actions for flag in action.option_strings}
    # A positional with fixed choices (the agent's name) names a sub-table.
    names = {c for a in sub._actions if not a.option_strings and a.choices for c in a.choices}
    table = [command, *[a for a in rest if a in names][:1]]
    added = table_arguments(text, path, table, known)
    return [*argv[: index + 1], *added, *rest]


def _requested_or_all() -> set[str]:
    # Only the chosen subcommand's module is imported; `--help` at top level needs none.
    requested = {a for a in sys.argv[1:] if a in SUBCOMMANDS}
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser, commands = build_parser()
    try:
        args = parser.parse_args(with_config_file(sys.argv[1:], commands))
        return int(args._module.run(args))
    except ConfigError as exc:
        command = next((a for a in sys.argv[1:] if a in SUBCOMMANDS), "")
        print(f"talkwire {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
