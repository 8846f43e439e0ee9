"""The SQL of mailer, installed as the package `mailer.sql` (pyproject.toml maps it here)."""
