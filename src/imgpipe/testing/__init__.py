"""The harness the tests and the benchmarks share: local servers and imgpipe's processes.

* :mod:`imgpipe.testing.servers` installs, starts and stops RabbitMQ, SeaweedFS (S3) and
  CouchDB on loopback (``python -m imgpipe.testing.servers start|stop|status|env``).
* :mod:`imgpipe.testing.names` is the one naming scheme for a run's exchanges, buckets and
  database.
* :mod:`imgpipe.testing.processes` runs ``imgpipe <service>`` and ``imgpipe dev`` as
  processes with those names.

No service imports this package (it is not in their import graph); it needs only the
standard library and aiohttp.
"""
