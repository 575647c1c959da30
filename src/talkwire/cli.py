"""`talkwire` console entry point.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, and imports a module only when
its subcommand runs so that `talkwire token` does not pay for aiortc.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkwire", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name not in _requested_or_all():
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _requested_or_all() -> set[str]:
    # Only the chosen subcommand's module is imported; `--help` at top level needs none.
    requested = {a for a in sys.argv[1:] if a in SUBCOMMANDS}
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args()
    try:
        return int(args._module.run(args))
    except ConfigError as exc:
        print(f"talkwire {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
