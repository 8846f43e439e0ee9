"""Use cases: accept mail, send it, record Mailjet's events, tell a job's story."""
