"""The staff dashboard under ``/dashboard/``; each page group keeps its own
routes in its view module."""

from django.urls import include, path

from models_admin.dashboard.views import (
    api_keys,
    compare,
    datasets,
    filters,
    inbox,
    jobs,
    knowledge,
    knowledge_ask,
    overview,
    privacy,
    review,
    usage,
    versions,
    widget_sites,
)

app_name = "dashboard"

urlpatterns = [
    path("", include(overview.urlpatterns)),
    path("usage/", include(usage.urlpatterns)),
    path("versions/", include(versions.urlpatterns)),
    path("versions/", include(compare.urlpatterns)),
    path("training/", include(jobs.urlpatterns)),
    path("training/", include(datasets.urlpatterns)),
    path("conversations/", include(review.urlpatterns)),
    path("filters/", include(filters.urlpatterns)),
    path("knowledge/", include(knowledge.urlpatterns)),
    path("knowledge/", include(knowledge_ask.urlpatterns)),
    path("api/", include(api_keys.urlpatterns)),
    path("widget/", include(widget_sites.urlpatterns)),
    path("inbox/", include(inbox.urlpatterns)),
    path("privacy/", include(privacy.urlpatterns)),
]
