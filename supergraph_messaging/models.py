"""``CacheKey``: an unmanaged model so the admin and its permissions govern the cache browser.

There is no table: the admin's views read Redis. The model exists for
Django's permissions (``view_cachekey``, ``delete_cachekey``), the admin
index entry and the admin log.
"""

from __future__ import annotations

from django.db import models


class CacheKey(models.Model):
    key = models.CharField(max_length=1024, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "cache key"
        verbose_name_plural = "cache keys"
        default_permissions = ("view", "delete")

    def __str__(self) -> str:
        return self.key
