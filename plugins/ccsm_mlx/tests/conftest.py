import pytest

pytest_plugins = ["ccsm_core.testing.fixtures"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test writes converted weights under its own folder, never in ~/.cache."""
    monkeypatch.setenv("CCSM_MLX_CACHE", str(tmp_path_factory.mktemp("mlx-cache")))
