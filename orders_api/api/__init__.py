"""The HTTP API process: the Flask app, its routes, its error contract, and gunicorn's settings."""
