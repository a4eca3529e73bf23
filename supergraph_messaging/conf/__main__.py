"""``python -m supergraph_messaging.conf > docs/settings.md``."""

from supergraph_messaging.conf import settings_reference

print(settings_reference(), end="")
