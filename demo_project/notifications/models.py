from django.db import models


class Notification(models.Model):
    message = models.CharField(max_length=255)
    payload = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.message
