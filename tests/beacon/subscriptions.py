from supergraph_messaging import Subscription


class BeaconSubscription(Subscription):
    """Signals of the beacon service (another process than the one that owns CameraEvents)."""

    entity = "Beacon"
    channels = ["beacon.events"]
    filters = {"n": ["eq", "gt"]}
    field_types = {"n": int}
    fields = ["n", "label"]
