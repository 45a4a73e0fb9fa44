"""Who may fetch a recording, and which file a name may mean.

A browser's ``<audio>`` cannot send the API token, so the dashboard asks (with the token) for a
link signed for one file and a short time; the link carries an HMAC of the name and its expiry
under a key derived from the token. A name is a path relative to the recordings folder: one
that is absolute, climbs out with ``..`` or leads out through a symlink is never served.

Where the files live elsewhere (an S3 bucket, the PBX's web server), the same signed link
answers with a redirect there instead (``recordings.redirect_template``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote


def signing_key(api_token: str) -> bytes:
    """Derived, so a leaked link signature says nothing about the token itself."""
    return hmac.new(api_token.encode(), b"leadrouter recordings v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class RecordingLinks:
    key: bytes
    ttl: float  # seconds a link lives

    def signature(self, name: str, expires: int) -> str:
        return hmac.new(self.key, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, name: str, now: float) -> tuple[int, str]:
        expires = int(now + self.ttl)
        return expires, self.signature(name, expires)

    def check(self, name: str, expires: int, signature: str, now: float) -> str | None:
        """Why the link is refused, or None when it holds."""
        if not hmac.compare_digest(signature.encode(), self.signature(name, expires).encode()):
            return "signature does not match"
        if expires < now:
            return "link expired"
        return None


def safe_name(name: str) -> PurePosixPath | None:
    """``name`` as a path that stays inside whatever folder it is read from, or None."""
    relative = PurePosixPath(name)
    if not name or "\\" in name or "\0" in name or relative.is_absolute() or ".." in relative.parts:
        return None
    return relative


def redirect_url(template: str, name: str) -> str | None:
    """Where ``recordings.redirect_template`` sends a player for ``name``; None for a name that climbs out."""
    return None if safe_name(name) is None else template.replace("{file}", quote(name))


def resolve(folder: Path, name: str) -> Path | None:
    """The file ``name`` means inside ``folder``, or None when it would be anything outside it."""
    relative = safe_name(name)
    if relative is None:
        return None
    try:
        root = folder.resolve()
        path = (root / relative).resolve()  # follows symlinks: one pointing out is caught below
        if not path.is_relative_to(root) or not path.is_file():
            return None
    except (OSError, RuntimeError):  # a name too long for the file system, a loop of symlinks
        return None
    return path
