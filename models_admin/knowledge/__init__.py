"""Knowledge bases without Django: reading documents (Markdown, text,
HTML, PDF) into headed sections, splitting them into passages, fetching
a URL within limits, and the search index over the passages."""
