"""HTML pages for people in a browser: blueprints and templates that only translate."""
