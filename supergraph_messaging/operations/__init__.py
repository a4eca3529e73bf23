"""What an operator runs and looks at: dead-letter tools and health probes.

Above delivery, events, realtime, cache and gateway (it reads all of them),
below the admin, the management commands and the URLs that expose it.
"""
