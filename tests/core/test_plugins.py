"""Plug-in lookup (core/plugins.py): found by name with pkgutil; a miss names the real plug-ins only."""
import pytest

from core.errors import ConfigError
from core.plugins import FACTORY, available, get_plugin


@pytest.mark.parametrize("kind", sorted(FACTORY))
def test_every_listed_plugin_has_its_factory(kind):
    for name in available(kind):
        assert callable(get_plugin(kind, name))


def test_sub_package_plugins_are_found():
    assert {"MHFA", "Baseline.Spk_Encoder"} <= set(available("models"))


@pytest.mark.parametrize("name", ["ssl_frontend", "MHFAA", "Baseline"])
def test_support_modules_and_unknown_names_are_refused_with_the_real_list(name):
    with pytest.raises(ConfigError) as err:
        get_plugin("models", name)
    message = str(err.value)
    listed = message.split("Available: ")[1].rstrip(".").split(", ")
    assert f"'{name}'" in message and listed == available("models") and "ssl_frontend" not in listed
