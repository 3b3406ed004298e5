"""One module per resource; `serve.app` includes each module's `router`."""
