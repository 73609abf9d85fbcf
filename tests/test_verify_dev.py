"""Verification on `imgpipe dev`, with the embedded backends and with the real servers.

The scenarios of :mod:`tests.test_verify` run here on the ``shared_system`` of
:mod:`tests.test_dev` (one `imgpipe dev` process per backend set).
"""

from tests.test_dev import shared_system  # noqa: F401 - the dev system, both backend sets
from tests.test_verify import (  # noqa: F401 - the shared scenarios, collected here too
    test_every_preset_verifies,
    test_incomplete_and_unknown_records,
    test_tampering_with_stored_objects_is_detected,
)
