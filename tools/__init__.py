"""Load harness and benchmarks, run as ``python -m tools.<name>``.

Nothing here is imported by the apps: the soak test drives a running
stack over HTTP and WebSockets, and the benchmarks time the engine, the
content filter and training from the command line (``make bench``,
``make train-bench``, ``make soak``)."""
