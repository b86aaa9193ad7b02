"""Settings of a small Django project with the admin, for test_it_static_django_admin.

The admin's login page needs auth, sessions, messages and contenttypes installed, but renders without a
query (an anonymous visitor has no session yet), so the database is an in-memory SQLite that is never
migrated. Static files are collected (by the test, ``manage collectstatic``) to DJADMIN_STATIC_ROOT with
the manifest storage: hashed names and a staticfiles.json, what a production deployment serves and what
``--static`` marks immutable.
"""

from __future__ import annotations

import os

SECRET_KEY = "integration-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djadmin.urls"
WSGI_APPLICATION = "djadmin.wsgi.application"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DJADMIN_STATIC_ROOT", "/nonexistent-static-root")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
USE_TZ = True
TIME_ZONE = "UTC"
