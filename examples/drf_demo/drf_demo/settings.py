"""Settings for the restflow demo: just enough Django to serve two DRF views.

There is no database, no auth and no template: the views only read the
cache, so nothing here needs a migration. Never use these settings in
production (the secret key is public and DEBUG is on).
"""

SECRET_KEY = "restflow-demo-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "drf_demo.urls"
INSTALLED_APPS = ["rest_framework"]
# No DATABASES: Django then uses its dummy backend, which is fine as long as
# nothing queries it, and runserver skips its "unapplied migrations" check.
DATABASES = {}
USE_TZ = True
# UTC, like the X-Cached-at headers, so the server log reads the same times.
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    # No authentication, so DRF never touches django.contrib.auth's tables.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    # Plain JSON: what curl shows, and no templates needed.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
