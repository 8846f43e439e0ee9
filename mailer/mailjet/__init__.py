"""Mailjet integration: the Send API v3.1 client, the Event API parser and a local simulator."""
