"""Asterisk over AMI (a wrapped panoramisk): connection, events -> domain, actions; plus the PBX simulator."""
