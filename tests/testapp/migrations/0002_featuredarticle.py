from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("testapp", "0001_initial")]  # noqa: RUF012

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="FeaturedArticle",
            fields=[],
            options={"proxy": True, "indexes": [], "constraints": []},
            bases=("testapp.article",),
        ),
    ]
