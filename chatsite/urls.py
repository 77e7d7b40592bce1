from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("models_admin.dashboard.urls")),
    path("", include("inference.urls")),
    path("", include("chat.urls")),
]
