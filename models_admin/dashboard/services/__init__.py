"""Writes that only the dashboard makes: staff review of conversations
and staff changes to API keys."""
