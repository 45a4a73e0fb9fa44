"""Lead lifecycle over time: intake, attempts, retries, pacing; drives calls through the PBX port."""
