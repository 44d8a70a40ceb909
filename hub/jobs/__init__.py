"""The job outbox: work recorded in the same transaction as its cause, run after commit."""
