"""HTTP views of the chat app: account pages, the chat page and its JSON
endpoints."""
