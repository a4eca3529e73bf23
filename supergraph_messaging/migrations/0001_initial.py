from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="CacheKey",
            fields=[("key", models.CharField(max_length=1024, primary_key=True, serialize=False))],
            options={
                "verbose_name": "cache key",
                "verbose_name_plural": "cache keys",
                "managed": False,
                "default_permissions": ("view", "delete"),
            },
        ),
    ]
