"""Market-data relay daemon: venue feeds normalized into NATS JetStream."""
