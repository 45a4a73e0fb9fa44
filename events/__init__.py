"""MQTT: the outbox publisher, the one place where events leave."""
