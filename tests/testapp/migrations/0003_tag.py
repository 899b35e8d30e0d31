from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0002_featuredarticle")]  # noqa: RUF012

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Tag",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=50)),
                ("articles", models.ManyToManyField(related_name="tags", to="testapp.article")),
            ],
        ),
    ]
