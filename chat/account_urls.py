"""Account URLs under ``/accounts/``: the account page with its data
rights (training choice, exports, deletion), log in and out, sign up,
change and reset the password, API keys."""

from django.contrib.auth import views as auth_views
from django.urls import path

from chat.forms import LoginForm, PasswordChangeForm, PasswordResetForm, SetPasswordForm
from chat.views.accounts import PasswordResetConfirmView, signup
from chat.views.api_keys import api_key_revoke_view, api_keys
from chat.views.privacy import (
    account,
    account_delete,
    data_export_download,
    data_export_start,
    data_exports_status,
    training_choice_view,
)

urlpatterns = [
    path("", account, name="account"),
    path("training/", training_choice_view, name="account-training"),
    path("delete/", account_delete, name="account-delete"),
    path("data/", data_export_start, name="data-export-start"),
    path("data/status/", data_exports_status, name="data-exports-status"),
    path("data/<str:token>/", data_export_download, name="data-export-download"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html",
            authentication_form=LoginForm,
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    # POST only (Django's default): a link or an image cannot log anyone out.
    path(
        "logout/",
        auth_views.LogoutView.as_view(template_name="registration/logged_out.html"),
        name="logout",
    ),
    path("signup/", signup, name="signup"),
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(
            template_name="registration/password_change_form.html",
            form_class=PasswordChangeForm,
        ),
        name="password_change",
    ),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="registration/password_change_done.html"
        ),
        name="password_change_done",
    ),
    path(
        "password/reset/",
        auth_views.PasswordResetView.as_view(
            template_name="registration/password_reset_form.html",
            email_template_name="registration/password_reset_email.html",
            subject_template_name="registration/password_reset_subject.txt",
            form_class=PasswordResetForm,
        ),
        name="password_reset",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetDoneView.as_view(
            template_name="registration/password_reset_done.html"
        ),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        PasswordResetConfirmView.as_view(
            template_name="registration/password_reset_confirm.html",
            form_class=SetPasswordForm,
        ),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="registration/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path("api-keys/", api_keys, name="api-keys"),
    path("api-keys/<int:key_id>/revoke/", api_key_revoke_view, name="api-key-revoke"),
]
