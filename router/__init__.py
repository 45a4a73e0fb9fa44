"""The domain core: leads, calls, managers, scenarios, selection. Pure Python: no I/O, no asyncio."""
