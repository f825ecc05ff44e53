"""A project board on FastAPI beside roomcast: its own session cookie, hooks, the server API."""
