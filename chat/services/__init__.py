"""Writes of the chat app, one module per sub-domain."""
