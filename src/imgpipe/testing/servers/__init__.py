"""Local servers for the tests and benchmarks: one base class, one small module a server.

:class:`~imgpipe.testing.servers.base.LocalServer` holds what every server shares
(state directory, pid and log, start/stop/ready, ``env()``); each server is a subclass:
:class:`~imgpipe.testing.servers.rabbitmq.RabbitMQServer`,
:class:`~imgpipe.testing.servers.seaweedfs.S3Server`,
:class:`~imgpipe.testing.servers.couchdb.ApacheCouchDB` (and
:class:`~imgpipe.testing.servers.couchdb.PouchDBServer`, the stand-in). The command
``python -m imgpipe.testing.servers`` starts and stops them for ``scripts/run``.
"""
