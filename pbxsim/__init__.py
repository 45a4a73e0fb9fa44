"""pbxsim: a fake Asterisk that speaks the real AMI protocol over TCP, the far side of leadrouter's wire.

It runs an extensions.conf dialplan (leadrouter's shipped contexts, or the transcripts' own)
with simulated clients and managers whose behaviour a :class:`World` decides, on a
:class:`ScaledClock`, and its events follow the transcripts captured from a real Asterisk
(tests/fixtures/ami/). It imports nothing of the daemon: the demo, the ``leadrouter
simulator`` command and the tests build it. Test controls (a hung Asterisk, dropped AMI
sessions, what was received) are listed in :class:`Simulator`'s docstring.
"""

from .clock import ScaledClock
from .server import Simulator
from .switch import ChannelInfo, ChannelRecord
from .wire import AmiUser, ManagerConf, read_manager_conf
from .world import Behaviour, World

__all__ = [
    "AmiUser",
    "Behaviour",
    "ChannelInfo",
    "ChannelRecord",
    "ManagerConf",
    "ScaledClock",
    "Simulator",
    "World",
    "read_manager_conf",
]
