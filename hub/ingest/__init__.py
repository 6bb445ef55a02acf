"""Intake: MLLP framing, HL7-over-HTTP, the accept service (store, then ACK) and ACK building."""
