"""The dialplan the AMI adapter's actions rely on; deploy/asterisk/ links to this one copy."""

from pathlib import Path

SHIPPED_DIALPLAN = Path(__file__).with_name("extensions_leadrouter.conf")
