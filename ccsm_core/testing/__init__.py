"""Helpers for plugin test suites.

- ``pytest_plugins = ["ccsm_core.testing.fixtures"]`` in a plugin's ``conftest.py`` gives the
  fixtures ``plugin_manager``, ``register_probe``, ``cli_runner``, ``reference_backend`` and
  ``tiny_csm_dir``.
- ``ccsm_core.testing.conformance.BackendConformance``: subclass it with
  ``backend_name = "yours"`` to run the backend conformance suite against your backend.
"""
