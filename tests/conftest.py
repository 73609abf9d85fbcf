"""Shared pytest configuration for imgpipe's tests."""

pytest_plugins = ["tests.servers", "tests.system", "tests.backend_sets", "tests.hardening"]
