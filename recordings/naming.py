"""Where a call's recording lands and the link supervisors open to listen to it.

The dialplan names the file after the client leg's Uniqueid (MixMonitor(leadrouter/${UNIQUEID}.wav)),
and that Uniqueid is the ChannelId we chose, so the name is known without asking the PBX.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class RecordingNamer:
    file_template: str  # "leadrouter/{channel_id}.wav", as in the dialplan
    url_template: str | None  # "https://pbx.example.com/recordings/{file}"

    def file(self, channel_id: str) -> str:
        return self.file_template.format(channel_id=channel_id)

    def url(self, file: str) -> str | None:
        if self.url_template is None:
            return None
        return self.url_template.format(file=quote(file))
