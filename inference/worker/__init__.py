"""The inference worker: a Redis transport around the engine.

It claims generation requests from a Redis stream consumer group (several
workers share one Redis), runs them in the engine of the model version in
production, appends every piece of text to that generation's own stream
with a sequence number, checks cancel flags every step and heartbeats its
state with a TTL.

- Crash safety: a worker renews its claim on the requests it is running;
  one whose heartbeat expires (killed) loses them to another worker at
  once, and one that stops renewing (frozen) after ``claim_timeout``
  seconds; the other worker continues the answer from the text already
  streamed, with the sequence numbers following on. A request that cannot
  be continued ends with an error event.
- Redis outages: events are numbered and logged by the worker before they
  are written, so a failed write loses nothing. While Redis is away the
  engine keeps generating; once it answers again (or comes back as a new
  server, noticed by its run id) the worker recreates its consumer group,
  rewrites every event a stream lacks, and completes what it held back.
  After a restart that lost data, one worker hands the generations whose
  request vanished to ``on_redis_restart`` (they end with an error rather
  than wait forever).
- SIGTERM: stop claiming, finish what runs within ``drain_timeout``, and
  leave the rest pending for another worker to continue.
- Promotion: the worker loads the new production version (and any canary
  version) beside the old one in a background thread, so streams keep
  flowing while it loads; new requests go to the new engine, running ones
  finish on the old one, which is freed once it is idle. A request for a
  version that is not loaded yet waits for it, still claimed by this
  worker. A promotion bumps a Redis counter that workers check several
  times a second; they also poll the database.
- A model folder that cannot be loaded leaves the worker up and
  reporting ``error``.

Modules, each with one job (this package imports none of them, so a web
process can read heartbeats without loading torch):

- ``heartbeat``: the heartbeat record, its writer and the one reader;
- ``keys``: the Redis key names a worker is given;
- ``link``: whether Redis answers;
- ``streams``: writing a generation's events to its stream;
- ``claims``: the consumer group, claiming, reclaiming and renewing;
- ``generations``: starting, delivering, completing and cancelling;
- ``versions``: loading, swapping and releasing model versions;
- ``recovery``: noticing Redis come back and catching up with it;
- ``loop``: ``InferenceWorker``, which composes them and runs;
- ``wiring``: the Django-backed callbacks and ``worker_build``.
"""
