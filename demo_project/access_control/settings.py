"""AccessControl: the cameras (its own database), their API, the camera cache it keeps filled."""

from demo_project.common import service_settings

globals().update(service_settings("access_control", "demo_project.access_control.apps.AccessControlConfig"))
