"""talkwire: a WebRTC edge for real-time voice AI."""

__version__ = "0.1.0"
