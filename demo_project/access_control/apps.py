from django.apps import AppConfig


class AccessControlConfig(AppConfig):
    name = "demo_project.access_control"
    label = "access_control"

    def ready(self) -> None:
        from . import cachesync  # noqa: F401 - keeps camera:mac:{mac_address} filled
