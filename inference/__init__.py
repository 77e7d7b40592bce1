"""Model inference: loading model folders, the engine (torch and
transformers, no Django), the Redis worker around it and the client that
``chat`` calls."""
