"""URL routes of the test Django project."""

from __future__ import annotations

from django.urls import path
from djproj import views

urlpatterns = [
    path("", views.text),
    path("json/", views.as_json),
    path("echo/", views.echo),
    path("protected/", views.protected),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("async/", views.async_view),
    path("boom/", views.boom),
]
