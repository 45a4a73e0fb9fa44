"""A fake Asterisk that speaks the real AMI protocol over TCP, for tests and demos of leadrouter.

It runs an extensions.conf dialplan (by default leadrouter's shipped contexts plus simulated
clients and managers whose behaviour a :class:`World` decides) on an injected clock, and its
events follow the transcripts captured from a real Asterisk in tests/fixtures/ami/.
"""

from .clock import SimClock
from .pbx import ChannelInfo
from .protocol import AmiUser
from .server import Simulator
from .world import Behaviour, World

__all__ = ["AmiUser", "Behaviour", "ChannelInfo", "SimClock", "Simulator", "World"]
