"""Statuses, transitions and errors: no Flask, no psycopg."""
