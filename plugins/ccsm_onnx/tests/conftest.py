pytest_plugins = ["ccsm_core.testing.fixtures"]
