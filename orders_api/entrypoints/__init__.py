"""HTTP entrypoint: the Flask app, its routes and its error contract."""
