"""The staff dashboard, one module per area; each module's ``urlpatterns``
is mounted by ``models_admin.dashboard.urls`` under ``/dashboard/``."""
