"""Model versions and their promotion to production; later also training
jobs, datasets, content filter rules and the staff dashboard."""
