"""Ministry statistics: aggregates maintained as messages are processed."""
