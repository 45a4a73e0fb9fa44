"""The composition root: wires the rooms into the daemon, the demo and the CLI."""
