"""Users' conversations, messages and feedback, the chat page, the
WebSocket consumers, the widget and its visitor sessions, API keys, and
stored conversations exported as training data."""
