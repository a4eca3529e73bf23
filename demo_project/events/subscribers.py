"""Imported by messaging_listen: wires the camera lookup's invalidate_on."""

from . import services  # noqa: F401
