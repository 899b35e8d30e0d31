"""Settings of the Django project the test suite runs the spec's views in."""

SECRET_KEY = "restflow-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "restflow.caching",
    "tests.testapp",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
# The spec's decorator gives no stale window; the project-wide setting does.
RESTFLOW_SETTINGS = {
    "CACHE_SETTINGS": {
        "MAX_ENTRIES": 10_000,
        "STALE_WHILE_REVALIDATE": 60,
    }
}
