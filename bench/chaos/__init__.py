"""The chaos harness (issue 6): leads through the real daemon while it is killed and its PBX, AMI link
and broker fail, then the invariants, judged from the database, the PBX and an MQTT subscriber.

Run: ``python -m bench.chaos --leads 300 --kills 3 --ami-drops 2 --pbx-restarts 1 --broker-outage 3``.
"""

from bench.chaos.harness import ChaosPlan, Report, run_chaos
from bench.chaos.invariants import INVARIANTS

__all__ = ["INVARIANTS", "ChaosPlan", "Report", "run_chaos"]
