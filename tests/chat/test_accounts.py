"""Account pages through HTTP, and the account services.

The chat page at ``/`` is rendered here once, to tell a signed-in request
from a visitor's (who gets the landing page there); otherwise tests check
where a response redirects and who the request belongs to, without
following to ``/``.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from chat.services.accounts import user_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 42"


def _signup(client: Client, username: str = "newcomer", **overrides: str):
    data = {
        "username": username,
        "email": "",
        "password1": PASSWORD,
        "password2": PASSWORD,
        **overrides,
    }
    return client.post(reverse("signup"), data)


def _login(client: Client, username: str, password: str = PASSWORD):
    # Through the view, not client.login(): django-axes needs the request.
    return client.post(reverse("login"), {"username": username, "password": password})


def _logged_in_as(client: Client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id).username if user_id else None


# --- Signup ------------------------------------------------------------------


def test_signups_are_bounded_per_client_address_per_hour(settings):
    """Past SIGNUPS_PER_ADDRESS_PER_HOUR accounts from one address, the form
    says why with 429 and creates nothing; another address still signs up."""
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    for name in ("first", "second"):
        assert _signup(Client(REMOTE_ADDR="203.0.113.7"), name).status_code == 302

    refused = _signup(Client(REMOTE_ADDR="203.0.113.7"), "third")

    assert refused.status_code == 429
    assert "Too many accounts were created from your address" in refused.content.decode()
    assert not User.objects.filter(username="third").exists()
    assert _signup(Client(REMOTE_ADDR="198.51.100.8"), "fourth").status_code == 302


def test_signup_creates_the_user_logs_them_in_and_redirects_to_chat(client):
    """A valid signup creates the account, logs it in and goes to ``/``."""
    response = _signup(client, "newcomer", email="New@Example.COM")

    assert response.status_code == 302
    assert response.url == reverse("chat")
    assert response.wsgi_request.user.is_authenticated
    assert _logged_in_as(client) == "newcomer"
    user = User.objects.get(username="newcomer")
    assert user.check_password(PASSWORD)
    assert user.email == "New@example.com"


def test_signup_page_has_the_inputs_browser_tests_use(client):
    """The signup and login pages carry the agreed data-testid attributes."""
    signup = client.get(reverse("signup")).content.decode()
    login = client.get(reverse("login")).content.decode()

    for testid in ("signup-username", "signup-password1", "signup-password2", "signup-submit"):
        assert f'data-testid="{testid}"' in signup
    for testid in ("login-username", "login-password", "login-submit"):
        assert f'data-testid="{testid}"' in login
    assert reverse("password_reset") in login
    assert reverse("signup") in login


def test_signup_refuses_a_username_differing_only_by_case(client):
    """An existing "Alice" keeps "alice" from signing up, with a field error."""
    UserFactory(username="Alice")

    response = _signup(client, "alice")

    assert response.status_code == 200
    assert "username" in response.context["form"].errors
    assert not User.objects.filter(username="alice").exists()
    assert _logged_in_as(client) is None


def test_signup_refuses_an_email_differing_only_by_case(client):
    """An email already on an account, in any case, cannot sign up again."""
    UserFactory(username="alice", email="alice@example.com")

    response = _signup(client, "bob", email="ALICE@example.com")

    assert response.status_code == 200
    assert "email" in response.context["form"].errors
    assert not User.objects.filter(username="bob").exists()


def test_signup_refuses_mismatched_passwords(client):
    """Two different passwords are refused on the confirmation field."""
    response = _signup(client, password2=NEW_PASSWORD)

    assert response.status_code == 200
    assert "password2" in response.context["form"].errors
    assert not User.objects.filter(username="newcomer").exists()


def test_signup_refuses_a_too_common_password(client):
    """A password from the common-passwords list is refused."""
    response = _signup(client, password1="password123", password2="password123")

    assert response.status_code == 200
    assert "too common" in str(response.context["form"].errors)
    assert not User.objects.filter(username="newcomer").exists()


def test_signup_does_not_redirect_off_site(client):
    """A ``next`` pointing to another host is ignored in favour of ``/``."""
    response = client.post(
        f"{reverse('signup')}?next=//evil.example/",
        {"username": "newcomer", "password1": PASSWORD, "password2": PASSWORD},
    )

    assert response.status_code == 302
    assert response.url == reverse("chat")


def test_signup_follows_a_same_site_next(client):
    """A local ``next`` is where the new user lands."""
    response = _signup(client, next="/status/")

    assert response.status_code == 302
    assert response.url == "/status/"


def test_signup_sends_a_logged_in_user_to_chat(client):
    """Someone already logged in is not shown the signup form."""
    client.force_login(UserFactory())

    response = client.get(reverse("signup"))

    assert response.status_code == 302
    assert response.url == reverse("chat")


# --- Login and logout --------------------------------------------------------


def test_login_with_the_right_password_logs_in_and_redirects_to_chat(client):
    """Correct credentials log the user in and go to ``/``."""
    user = UserFactory()

    response = _login(client, user.username)

    assert response.status_code == 302
    assert response.url == reverse("chat")
    assert _logged_in_as(client) == user.username


def test_login_ignores_the_case_of_the_username_and_stays_logged_in(client):
    """Usernames are unique regardless of case, so "ALICE" logs in Alice."""
    UserFactory(username="Alice")

    response = _login(client, "aLiCe")

    assert response.status_code == 302
    assert _logged_in_as(client) == "Alice"
    # The session's backend resolves the user on the next request: the
    # chat, not the landing page a visitor gets at the same URL.
    response = client.get(reverse("chat"))
    assert response.status_code == 200
    assert "chat/chat.html" in [t.name for t in response.templates]


def test_login_with_a_wrong_password_shows_an_error(client):
    """A wrong password re-renders the form with a non-field error."""
    user = UserFactory()

    response = _login(client, user.username, "not the password")

    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    assert _logged_in_as(client) is None


def test_login_page_sends_a_logged_in_user_to_chat(client):
    """The login page redirects someone already logged in."""
    client.force_login(UserFactory())

    response = client.get(reverse("login"))

    assert response.status_code == 302
    assert response.url == reverse("chat")


def test_logout_by_post_logs_out(client):
    """POST to logout ends the session and goes to the login page."""
    user = UserFactory()
    _login(client, user.username)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response.url == reverse("login")
    assert _logged_in_as(client) is None


def test_logout_by_get_is_refused_and_keeps_the_session(client):
    """GET cannot log anyone out: a link or an image must not end a session."""
    user = UserFactory()
    client.force_login(user)

    response = client.get(reverse("logout"))

    assert response.status_code == 405
    assert _logged_in_as(client) == user.username


# --- Lockout -----------------------------------------------------------------


def _fail_until_locked(client: Client, username: str):
    response = None
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = _login(client, username, "wrong password")
    return response


def test_login_locks_out_after_the_failure_limit_even_with_the_right_password(client):
    """After AXES_FAILURE_LIMIT wrong passwords, the right one is refused too."""
    user = UserFactory()
    last_failure = _fail_until_locked(client, user.username)

    response = _login(client, user.username)

    assert last_failure.status_code == 429
    assert response.status_code == 429
    assert "registration/locked_out.html" in [t.name for t in response.templates]
    assert not response.wsgi_request.user.is_authenticated
    assert _logged_in_as(client) is None


def test_the_lockout_counts_every_case_of_a_username_as_one(client):
    """Failures spelt "alice", "Alice", "ALICE"... add up to one lockout,
    which holds for every spelling; a variant's login cannot lift it."""
    user = UserFactory(username="alice")
    spellings = ["Alice", "ALICE", "aLiCe", "alicE", "ALIce", "alIce"]
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        last_failure = _login(client, spellings[attempt % len(spellings)], "wrong password")

    assert last_failure.status_code == 429
    for spelling in ("alice", "Alice", "ALICE"):
        response = _login(client, spelling)
        assert response.status_code == 429, spelling
    assert _logged_in_as(client) is None
    assert user.username == "alice"


def test_locked_out_page_does_not_reveal_whether_the_username_exists(client):
    """A real and a made-up username get the same page, naming neither."""
    UserFactory(username="realperson")
    _fail_until_locked(client, "realperson")
    _fail_until_locked(client, "madeupname")

    real = _login(client, "realperson")
    made_up = _login(client, "madeupname")

    assert real.status_code == made_up.status_code == 429
    assert real.content == made_up.content
    assert b"realperson" not in real.content


def test_lockout_is_per_username(client):
    """Locking one username out leaves others free to log in."""
    _fail_until_locked(client, UserFactory().username)
    other = UserFactory()

    response = _login(client, other.username)

    assert response.status_code == 302
    assert _logged_in_as(client) == other.username


# --- Password change ---------------------------------------------------------


def test_password_change_replaces_the_old_password(client):
    """After a change the new password logs in and the old one does not."""
    user = UserFactory()
    client.force_login(user)

    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert response.url == reverse("password_change_done")
    # The session survives the change (update_session_auth_hash).
    assert client.get(reverse("password_change_done")).status_code == 200
    client.post(reverse("logout"))
    assert _login(client, user.username, PASSWORD).status_code == 200
    assert _login(client, user.username, NEW_PASSWORD).status_code == 302
    assert _logged_in_as(client) == user.username


def test_password_change_refuses_a_wrong_old_password(client):
    """The old password has to be typed correctly."""
    user = UserFactory()
    client.force_login(user)

    response = client.post(
        reverse("password_change"),
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 200
    assert "old_password" in response.context["form"].errors
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_password_change_needs_a_login(client):
    """Anonymous visitors are sent to the login page."""
    response = client.get(reverse("password_change"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


# --- Password reset ----------------------------------------------------------


def _reset_by_email(client: Client, email: str, new_password: str):
    response = client.post(reverse("password_reset"), {"email": email})
    assert response.status_code == 302
    assert response["Location"] == reverse("password_reset_done")
    assert len(mail.outbox) == 1
    match = re.search(r"https?://testserver(/\S+)", str(mail.outbox[0].body))
    assert match, mail.outbox[0].body
    # The emailed link moves the token into the session and redirects to a
    # URL without it, where the form is.
    form_page = client.get(match.group(1), follow=True)
    assert form_page.context["validlink"]
    set_password_url = form_page.redirect_chain[-1][0]
    return client.post(
        set_password_url, {"new_password1": new_password, "new_password2": new_password}
    )


def test_password_reset_link_sets_a_new_password_that_logs_in(client):
    """The emailed link lets the user choose a password and log in with it."""
    user = UserFactory(email="reset.me@example.com")

    response = _reset_by_email(client, "Reset.Me@example.com", NEW_PASSWORD)

    assert response.status_code == 302
    assert response.url == reverse("password_reset_complete")
    assert mail.outbox[0].to == ["reset.me@example.com"]
    assert "\n" not in mail.outbox[0].subject
    assert _login(client, user.username, PASSWORD).status_code == 200
    assert _login(client, user.username, NEW_PASSWORD).status_code == 302
    assert _logged_in_as(client) == user.username


def test_password_reset_link_works_only_once(client):
    """A used link shows the invalid-link page instead of the form."""
    UserFactory(email="once@example.com")
    _reset_by_email(client, "once@example.com", NEW_PASSWORD)
    link = re.search(r"https?://testserver(/\S+)", mail.outbox[0].body)
    assert link

    response = client.get(link.group(1), follow=True)

    assert response.status_code == 200
    assert not response.context["validlink"]


def test_password_reset_for_an_unknown_email_sends_nothing_but_looks_the_same(client):
    """An address with no account gets the same "done" page and no email."""
    response = client.post(reverse("password_reset"), {"email": "nobody@example.com"})

    assert response.status_code == 302
    assert response.url == reverse("password_reset_done")
    assert client.get(response.url).status_code == 200
    assert mail.outbox == []


def test_password_reset_lifts_a_lockout(client):
    """A locked-out user who resets the password can log in at once."""
    user = UserFactory(email="locked@example.com")
    _fail_until_locked(client, user.username)
    assert _login(client, user.username).status_code == 429

    _reset_by_email(client, "locked@example.com", NEW_PASSWORD)
    response = _login(client, user.username, NEW_PASSWORD)

    assert response.status_code == 302
    assert _logged_in_as(client) == user.username


# --- user_create -------------------------------------------------------------


def test_user_create_hashes_the_password_and_normalizes_the_email():
    """The service stores a usable hash, never the raw password."""
    user = user_create(username="carol", password=PASSWORD, email="Carol@EXAMPLE.com")

    user.refresh_from_db()
    assert user.password != PASSWORD
    assert user.check_password(PASSWORD)
    assert user.email == "Carol@example.com"
    assert not user.is_staff


def test_user_create_rejects_an_invalid_username():
    """Spaces and punctuation outside @.+-_ are not allowed in usernames."""
    with pytest.raises(ValidationError) as excinfo:
        user_create(username="bad name!", password=PASSWORD)

    assert "username" in excinfo.value.message_dict
    assert not User.objects.exists()


def test_user_create_rejects_a_weak_password():
    """Passwords that fail AUTH_PASSWORD_VALIDATORS are refused."""
    with pytest.raises(ValidationError) as excinfo:
        user_create(username="dave", password="12345678")

    assert "password" in excinfo.value.message_dict
    assert not User.objects.exists()


def test_user_create_rejects_a_username_differing_only_by_case():
    """The service enforces case-insensitive uniqueness, not only the form."""
    UserFactory(username="Erin")

    with pytest.raises(ValidationError) as excinfo:
        user_create(username="erin", password=PASSWORD)

    assert "username" in excinfo.value.message_dict


def test_user_create_rejects_an_email_differing_only_by_case():
    """Two accounts cannot share an email address in different cases."""
    UserFactory(username="frank", email="frank@example.com")

    with pytest.raises(ValidationError) as excinfo:
        user_create(username="frank2", password=PASSWORD, email="FRANK@example.com")

    assert "email" in excinfo.value.message_dict
