from django.contrib import admin
from django.urls import include, path

from chatsite import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("models_admin.dashboard.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("", include("chat.urls")),
]
