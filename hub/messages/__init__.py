"""The HL7 v2 message log: intake (persist, then ACK), mapping jobs, search and replay."""
