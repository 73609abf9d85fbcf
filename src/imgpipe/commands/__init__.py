"""The `imgpipe` commands that are no service of their own: `dev`, `dlq`, `queues`, `presets`.

Each module adds its subcommand to the parser ``imgpipe.cli`` builds
(``add_parser(sub)``) and carries it out; a service's own commands stay in its
folder (``provenance/commands.py``, ``credentials/commands.py``,
``client/commands.py``).
"""
