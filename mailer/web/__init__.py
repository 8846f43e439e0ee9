"""The web server tier: gunicorn worker class and its request framing."""
