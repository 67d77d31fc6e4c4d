"""Settings: the only place that reads the environment.

``Settings.from_env()`` builds a frozen value once, at start-up; everything else receives it. Tests
build ``Settings(...)`` directly. Every variable is documented in README.md ("Configuration").
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir_profiles import CANONICAL

ENVIRONMENTS = ("dev", "prod")
MIN_BUDGET, MAX_BUDGET = 0.1, 3600.0  # DUI_REQUEST_BUDGET, seconds


class SettingsError(ValueError):
    """A setting is missing, malformed or not allowed in this environment."""


@dataclass(frozen=True)
class Limits:
    """Request limits: each breach gets a clear 4xx, never a 500."""

    max_request_bytes: int = 20 * 1024 * 1024
    max_bundle_entries: int = 1000
    max_json_depth: int = 100
    default_count: int = 20
    max_count: int = 1000
    max_parameters: int = 100  # query plus form parameters of one FHIR request (400, or 414 for the URL)


@dataclass(frozen=True)
class InsiSettings:
    """The INSi téléservice: endpoint and structure certificate (mutual TLS). No URL: in ``dev``, the local
    simulator (started on first use, certificates under ``simulator_dir``); in ``prod``, INSi calls are refused."""

    url: str | None = None
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    timeout: float = 10.0
    simulator_dir: str = "var/insi-simulator"


@dataclass(frozen=True)
class EncryptionSettings:
    """Encryption at rest (docs/security.md): the master key that wraps the data keys, as base64 or a file; the
    previous one during a rotation. None configured: a development key under ``dev_key_dir``; refused in ``prod``."""

    master_key: str | None = field(default=None, repr=False)
    master_key_file: str | None = None
    previous_master_key: str | None = field(default=None, repr=False)
    previous_master_key_file: str | None = None
    dev_key_dir: str = "var/keys"


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail's chain (docs/security.md, "Audit trail"): the audit key that seals it (HMAC-SHA256), the
    keys it replaced in rotations (they verify what they sealed, never seal), and the append-only file each seal
    writes its head to. No key configured: a development key under ``EncryptionSettings.dev_key_dir``; refused in
    ``prod``. No heads file: heads go to the log only (``dui.audit``, event ``audit head``). Built in code (tests),
    no heads file; ``from_env`` defaults it to ``DEV_HEADS_FILE`` in ``dev``."""

    key_file: str | None = None
    previous_key_files: tuple[str, ...] = ()
    heads_file: str | None = None


DEV_HEADS_FILE = "var/audit-heads.jsonl"


@dataclass(frozen=True)
class AuthSettings:
    """Authentication (docs/security.md, "Authentication"). ``None`` for the two switches means "by
    environment": on in ``dev``, off in ``prod``."""

    signing_key: str | None = None  # PEM file of the server's EC P-256 token-signing key; dev: generated
    dev_key_dir: str = "var/auth"  # where ``dev`` generates its signing key when none is configured
    token_lifetime: int = 300  # seconds an access token lives
    allow_anonymous: bool | None = None  # requests without a token run as ANONYMOUS
    password_grant: bool | None = None  # grant_type=password for local staff accounts
    oidc_issuers: str | None = None  # JSON file describing the trusted OIDC issuers (Pro Santé Connect, IdP)


@dataclass(frozen=True)
class RateLimits:
    """Token buckets (docs/security.md, "Hardening"): ``per_minute`` requests a minute, ``burst`` at once, per
    actor (API client, staff member, else remote address); ``auth_*`` for ``/auth/token`` per remote address.
    0 per minute turns a limit off. Off when built in code (tests); ``from_env`` starts from
    ``DEFAULT_RATE_LIMITS``."""

    per_minute: int = 0
    burst: int = 0
    auth_per_minute: int = 0
    auth_burst: int = 0


DEFAULT_RATE_LIMITS = RateLimits(per_minute=1200, burst=200, auth_per_minute=30, auth_burst=10)


ProxyNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP edge: the browser origins CORS allows (none: no CORS headers at all), and the reverse proxies
    whose ``X-Forwarded-For`` entries are believed, by address or network (none: the peer's address is the
    client's; ``dui.web.proxies``)."""

    cors_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[ProxyNetwork, ...] = ()


VALIDATION_MODES = ("reject", "warn", "off")
DEFAULT_PROFILES = f"Patient={CANONICAL}/StructureDefinition/dui-resident"


@dataclass(frozen=True)
class ValidationSettings:
    """Profile validation on write (docs/profiles.md): a mode per resource type, default profiles per type."""

    modes: tuple[tuple[str, str], ...] = (("*", "warn"),)  # (type or "*", reject | warn | off)
    default_profiles: tuple[tuple[str, str], ...] = (("Patient", f"{CANONICAL}/StructureDefinition/dui-resident"),)

    def mode(self, rtype: str) -> str:
        """The write policy of ``rtype``: its own entry, else the ``*`` entry, else ``warn``."""
        found = dict(self.modes)
        return found.get(rtype) or found.get("*") or "warn"

    def profiles_for(self, rtype: str) -> tuple[str, ...]:
        return tuple(url for t, url in self.default_profiles if t == rtype)


# A placeholder root for the ids of the documents built here, for development and tests only: an establishment
# (or its software vendor) registers its own OID and sets DUI_DOCUMENT_OID; DUI_ENV=prod refuses this one.
DEV_DOCUMENT_OID = "1.2.250.1.999.42.1"


@dataclass(frozen=True)
class DocumentSettings:
    oid: str = DEV_DOCUMENT_OID  # root of the CDA ids (ClinicalDocument/id, setId) of the documents built here
    dlu_quiet: float = 60.0  # seconds without a change before a stale DLU is rebuilt (one rebuild per burst)
    dlu_max_delay: float = 900.0  # seconds a DLU may stay stale, however often the record changes


@dataclass(frozen=True)
class AlertSettings:
    """Fall-sensor alerts (docs/staff-api.md, "Fall-sensor alerts")."""

    escalation: float = 120.0  # seconds an alert may wait for an acknowledgement before it goes to the whole house
    merge_window: float = 600.0  # seconds during which a room's new events join its open alert
    stream_seconds: float = 300.0  # an SSE stream ends after this; the client reconnects with Last-Event-ID


@dataclass(frozen=True)
class OutboxSettings:
    """``dui worker``'s outbox runs (docs/outbox.md)."""

    backoff_base: float = 30.0  # seconds: the first retry waits up to this, each next one up to twice as long
    backoff_cap: float = 3600.0  # seconds: no retry waits longer
    max_attempts: int = 10  # then the job is dead
    lease: float = 300.0  # seconds a worker holds a job before another may take it again


METRICS_TOKEN_MIN = 16  # characters of DUI_METRICS_TOKEN


@dataclass(frozen=True)
class ReadReplicaSettings:
    """Reads from a PostgreSQL streaming replica (docs/scaling.md): its URL (None: every read on the primary), the
    lag beyond which reads go back to the primary, and how often each process checks the replica."""

    url: str | None = field(default=None, repr=False)  # may carry a password
    max_lag: float = 10.0  # seconds behind the primary beyond which the replica is not read
    check_interval: float = 1.0  # seconds between two checks of the replica's position by one process


@dataclass(frozen=True)
class MetricsSettings:
    """``/metrics`` (docs/metrics.md): the bearer token the monitoring system presents (None: served to loopback
    peers only in ``dev``, not served in ``prod``), and the folder under which ``dui serve`` creates each run's
    directory of per-worker metric files (None: the system's temporary folder)."""

    token: str | None = field(default=None, repr=False)
    directory: str | None = None


@dataclass(frozen=True)
class ExportSettings:
    """FHIR Bulk Data ``$export`` (docs/bulk-export.md): where the files go, how large one may grow, how long they are
    kept after the export completes; ``page`` (resources a search page asks for) and ``batch_bytes`` (bodies read
    from the store at once) bound what the worker holds in memory."""

    directory: str = "var/exports"
    file_bytes: int = 64 * 1024 * 1024
    retention_hours: int = 24
    page: int = 500
    batch_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class RetentionSettings:
    """How long ``dui purge`` keeps what it may remove, in days (docs/retention.md).
    The audit trail is never purged by it."""

    outbox_days: int = 90  # done and cancelled outbox jobs (and dead letters with --dead), after their last change
    alert_events_days: int = 30  # device_event, staff_alert_event (the alerts themselves and the record stay)
    mssante_days: int = 365  # decided rows of the MSSanté reconciliation queue (its Task stays in the record)
    tombstone_days: int = 7305  # deleted FHIR resources, after their deletion: 20 years (CSP R1112-7)


@dataclass(frozen=True)
class DmpSettings:
    """The DMP (XDS.b over mutual TLS, docs/dmp.md). No URL: in ``dev``, the local DMP simulator (started on first
    use, certificates under ``simulator_dir``); in ``prod``, sending to the DMP is refused."""

    url: str | None = None
    cert: str | None = None  # the structure's transport certificate (PEM, or PKCS#12 .p12/.pfx)
    key: str | None = field(default=None, repr=False)
    ca: str | None = None
    signing_cert: str | None = None  # the "cachet" certificate that signs the VIHF
    signing_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    simulator_dir: str = "var/dmp-simulator"
    structure_id: str = "DEV-STRUCTURE"  # Identifiant_Structure of the VIHF (the establishment's idNat)
    auto_send: tuple[str, ...] = ()  # FINESS of establishments whose DLU and FLUDT go to the DMP when built; "*": all


@dataclass(frozen=True)
class MssanteSettings:
    """MSSanté (docs/mssante.md): the operator's SMTP submission and IMAP servers (``smtp://`` STARTTLS, ``smtps://``
    and ``imaps://`` implicit TLS), the establishment's applicative mailbox (``sender``), its client certificate and
    key (PEM), the CA of the operator's servers. Unset: sending is refused with a clear error, nothing is polled."""

    smtp_url: str | None = field(default=None, repr=False)  # may carry a password
    imap_url: str | None = field(default=None, repr=False)
    sender: str | None = None
    cert: str | None = None
    key: str | None = field(default=None, repr=False)
    ca: str | None = None
    timeout: float = 30.0

    @property
    def can_send(self) -> bool:
        return bool(self.smtp_url and self.sender and self.cert and self.key and self.ca)

    @property
    def can_receive(self) -> bool:
        return bool(self.imap_url and self.cert and self.key and self.ca)

    def missing(self, what: str) -> str:
        """One line naming the settings a use of MSSanté lacks."""
        names = {"smtp_url": "DUI_MSSANTE_SMTP_URL", "imap_url": "DUI_MSSANTE_IMAP_URL", "sender": "DUI_MSSANTE_FROM",
                 "cert": "DUI_MSSANTE_CERT", "key": "DUI_MSSANTE_KEY", "ca": "DUI_MSSANTE_CA"}
        wanted = ("smtp_url", "sender", "cert", "key", "ca") if what == "send" else ("imap_url", "cert", "key", "ca")
        lacking = [names[n] for n in wanted if not getattr(self, n)]
        return f"MSSanté is not configured: set {', '.join(lacking)}"


@dataclass(frozen=True)
class Settings:
    env: str = "dev"
    database_url: str = "sqlite:///var/dui.sqlite"
    read_replica: ReadReplicaSettings = field(default_factory=ReadReplicaSettings)
    base_url: str = "http://127.0.0.1:8080"
    # DUI_CANONICAL_BASE: the base of the canonical urls of the server's own OperationDefinitions and
    # SearchParameters (its API); None: the FHIR base, where they resolve (docs/profiles.md)
    canonical_base: str | None = None
    timezone: str = "Europe/Paris"
    statement_timeout: int = 30  # seconds a database statement may run (PostgreSQL); 0: no limit
    request_budget: float = 20.0  # seconds a FHIR request may run before it is stopped (503); 0: no limit
    log_level: str = "INFO"
    log_json: bool = False
    limits: Limits = field(default_factory=Limits)
    insi: InsiSettings = field(default_factory=InsiSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    rate: RateLimits = field(default_factory=RateLimits)
    http: HttpSettings = field(default_factory=HttpSettings)
    policy_file: str | None = None  # JSON overrides of the authorization policy (docs/security.md)
    # Shared counters (rate limits) across processes and hosts; None: PostgreSQL's, or each process's memory
    redis_url: str | None = field(default=None, repr=False)  # may carry a password
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    # The CDA conformance material: a checkout of ANS TestContenuCDA, the folder holding schematrons/ and
    # infrastructure/ (docs/documents.md); None: `dui documents check` needs --material
    cda_material: str | None = None
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    dmp: DmpSettings = field(default_factory=DmpSettings)
    mssante: MssanteSettings = field(default_factory=MssanteSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    # ``_text`` / ``_content``: a full-text index of narratives and strings (docs/security.md, "What the search
    # index holds"); off: neither indexed nor searchable
    text_search: bool = True

    @property
    def fhir_base(self) -> str:
        """Absolute base of the FHIR REST API, used in ``fullUrl``, ``Location`` and paging links."""
        return self.base_url.rstrip("/") + "/fhir"

    @property
    def api_canonical_base(self) -> str:
        """The base of the canonical urls of the server's own OperationDefinitions and SearchParameters:
        ``DUI_CANONICAL_BASE``, or the FHIR base, where ``{base}/{type}/{id}`` is this server's read of it."""
        return (self.canonical_base or self.fhir_base).rstrip("/")

    @property
    def statement_timeout_ms(self) -> int:
        """The PostgreSQL statement timeout in force: ``DUI_STATEMENT_TIMEOUT``, never beyond the request budget
        (a statement would otherwise outlive the request it serves); 0 when neither is set."""
        limits = [int(value * 1000) for value in (self.statement_timeout, self.request_budget) if value > 0]
        return max(1, min(limits)) if limits else 0

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``DUI_*`` variables; raise ``SettingsError`` with one clear line on a bad value."""
        env = os.environ if environ is None else environ
        defaults = cls()
        d_limits = defaults.limits
        name = env.get("DUI_ENV", defaults.env)
        if name not in ENVIRONMENTS:
            raise SettingsError(f"DUI_ENV must be one of {', '.join(ENVIRONMENTS)}, not {name!r}")
        limits = Limits(
            max_request_bytes=_int(env, "DUI_MAX_REQUEST_BYTES", d_limits.max_request_bytes, minimum=1024),
            max_bundle_entries=_int(env, "DUI_MAX_BUNDLE_ENTRIES", d_limits.max_bundle_entries, minimum=1),
            max_json_depth=_int(env, "DUI_MAX_JSON_DEPTH", d_limits.max_json_depth, minimum=16),
            default_count=_int(env, "DUI_DEFAULT_COUNT", d_limits.default_count, minimum=1),
            max_count=_int(env, "DUI_MAX_COUNT", d_limits.max_count, minimum=1),
            max_parameters=_int(env, "DUI_MAX_PARAMETERS", d_limits.max_parameters, minimum=10),
        )
        if limits.default_count > limits.max_count:
            raise SettingsError("DUI_DEFAULT_COUNT must not exceed DUI_MAX_COUNT")
        base_url = env.get("DUI_BASE_URL", defaults.base_url)
        if not base_url.startswith(("http://", "https://")):
            raise SettingsError(f"DUI_BASE_URL must be an http(s) URL, not {base_url!r}")
        canonical_base = env.get("DUI_CANONICAL_BASE") or None
        if canonical_base is not None and not re.fullmatch(r"https?://[^\s?#]+", canonical_base):
            raise SettingsError("DUI_CANONICAL_BASE must be an absolute http(s) URL without query or fragment, not "
                                f"{canonical_base!r}")
        insi = InsiSettings(
            url=env.get("DUI_INSI_URL") or None, cert=env.get("DUI_INSI_CERT") or None,
            key=env.get("DUI_INSI_KEY") or None, ca=env.get("DUI_INSI_CA") or None,
            timeout=float(_int(env, "DUI_INSI_TIMEOUT", int(defaults.insi.timeout), minimum=1)),
            simulator_dir=env.get("DUI_INSI_SIMULATOR_DIR", defaults.insi.simulator_dir),
        )
        encryption = EncryptionSettings(
            master_key=env.get("DUI_MASTER_KEY") or None, master_key_file=env.get("DUI_MASTER_KEY_FILE") or None,
            previous_master_key=env.get("DUI_MASTER_KEY_PREVIOUS") or None,
            previous_master_key_file=env.get("DUI_MASTER_KEY_PREVIOUS_FILE") or None,
        )
        audit = AuditSettings(
            key_file=env.get("DUI_AUDIT_KEY_FILE") or None,
            previous_key_files=tuple(p.strip() for p in env.get("DUI_AUDIT_KEY_PREVIOUS_FILE", "").split(",")
                                     if p.strip()),
            heads_file=env.get("DUI_AUDIT_HEADS_FILE") or (None if name == "prod" else DEV_HEADS_FILE),
        )
        auth = AuthSettings(
            signing_key=env.get("DUI_AUTH_SIGNING_KEY") or None,
            token_lifetime=_int(env, "DUI_AUTH_TOKEN_LIFETIME", defaults.auth.token_lifetime, minimum=30),
            allow_anonymous=_bool(env, "DUI_AUTH_ALLOW_ANONYMOUS", name != "prod"),
            password_grant=_bool(env, "DUI_AUTH_PASSWORD_GRANT", name != "prod"),
            oidc_issuers=env.get("DUI_AUTH_OIDC_ISSUERS") or None,
        )
        d_rate = DEFAULT_RATE_LIMITS
        rate = RateLimits(
            per_minute=_int(env, "DUI_RATE_LIMIT", d_rate.per_minute),
            burst=_int(env, "DUI_RATE_LIMIT_BURST", d_rate.burst, minimum=1),
            auth_per_minute=_int(env, "DUI_AUTH_RATE_LIMIT", d_rate.auth_per_minute),
            auth_burst=_int(env, "DUI_AUTH_RATE_LIMIT_BURST", d_rate.auth_burst, minimum=1),
        )
        http = HttpSettings(
            cors_origins=_origins(env.get("DUI_CORS_ORIGINS", "")),
            trusted_proxies=proxy_networks(env.get("DUI_TRUSTED_PROXIES", "")),
        )
        settings = cls(
            env=name,
            database_url=env.get("DUI_DATABASE_URL", defaults.database_url),
            read_replica=ReadReplicaSettings(
                url=env.get("DUI_DATABASE_READ_URL") or None,
                max_lag=_seconds(env, "DUI_DATABASE_READ_MAX_LAG", defaults.read_replica.max_lag),
                check_interval=_seconds(env, "DUI_DATABASE_READ_CHECK_INTERVAL",
                                        defaults.read_replica.check_interval),
            ),
            base_url=base_url.rstrip("/"),
            canonical_base=canonical_base.rstrip("/") if canonical_base else None,
            timezone=_timezone(env.get("DUI_TIMEZONE", defaults.timezone)),
            statement_timeout=_int(env, "DUI_STATEMENT_TIMEOUT", defaults.statement_timeout),
            request_budget=_seconds(env, "DUI_REQUEST_BUDGET", defaults.request_budget),
            log_level=env.get("DUI_LOG_LEVEL", defaults.log_level).upper(),
            log_json=_bool(env, "DUI_LOG_JSON", name == "prod"),
            text_search=_bool(env, "DUI_TEXT_SEARCH", True),
            limits=limits,
            insi=insi,
            encryption=encryption,
            audit=audit,
            auth=auth,
            rate=rate,
            http=http,
            policy_file=env.get("DUI_POLICY_FILE") or None,
            redis_url=_redis_url(env.get("DUI_REDIS_URL", "")),
            validation=ValidationSettings(
                modes=_validation_modes(env.get("DUI_VALIDATION", "warn")),
                default_profiles=_default_profiles(env.get("DUI_DEFAULT_PROFILES", DEFAULT_PROFILES)),
            ),
            cda_material=env.get("DUI_CDA_MATERIAL") or None,
            dmp=DmpSettings(
                url=env.get("DUI_DMP_URL") or None, cert=env.get("DUI_DMP_CERT") or None,
                key=env.get("DUI_DMP_KEY") or None, ca=env.get("DUI_DMP_CA") or None,
                signing_cert=env.get("DUI_DMP_SIGNING_CERT") or None,
                signing_key=env.get("DUI_DMP_SIGNING_KEY") or None,
                timeout=_seconds(env, "DUI_DMP_TIMEOUT", DmpSettings.timeout) or DmpSettings.timeout,
                simulator_dir=env.get("DUI_DMP_SIMULATOR_DIR", DmpSettings.simulator_dir),
                structure_id=env.get("DUI_DMP_STRUCTURE_ID") or DmpSettings.structure_id,
                auto_send=tuple(x.strip() for x in env.get("DUI_DMP_AUTO_SEND", "").split(",") if x.strip()),
            ),
            mssante=MssanteSettings(
                smtp_url=env.get("DUI_MSSANTE_SMTP_URL") or None, imap_url=env.get("DUI_MSSANTE_IMAP_URL") or None,
                sender=env.get("DUI_MSSANTE_FROM") or None, cert=env.get("DUI_MSSANTE_CERT") or None,
                key=env.get("DUI_MSSANTE_KEY") or None, ca=env.get("DUI_MSSANTE_CA") or None,
                timeout=_seconds(env, "DUI_MSSANTE_TIMEOUT", MssanteSettings.timeout) or MssanteSettings.timeout,
            ),
            documents=DocumentSettings(
                oid=_oid(env.get("DUI_DOCUMENT_OID") or defaults.documents.oid),
                dlu_quiet=_seconds(env, "DUI_DLU_QUIET", defaults.documents.dlu_quiet),
                dlu_max_delay=_seconds(env, "DUI_DLU_MAX_DELAY", defaults.documents.dlu_max_delay),
            ),
            alerts=AlertSettings(
                escalation=_seconds(env, "DUI_ALERT_ESCALATION", defaults.alerts.escalation),
                merge_window=_seconds(env, "DUI_ALERT_MERGE_WINDOW", defaults.alerts.merge_window),
                stream_seconds=max(1.0, _seconds(env, "DUI_ALERT_STREAM_SECONDS", defaults.alerts.stream_seconds)),
            ),
            outbox=OutboxSettings(
                backoff_base=_seconds(env, "DUI_OUTBOX_BACKOFF_BASE", defaults.outbox.backoff_base),
                backoff_cap=_seconds(env, "DUI_OUTBOX_BACKOFF_CAP", defaults.outbox.backoff_cap),
                max_attempts=_int(env, "DUI_OUTBOX_MAX_ATTEMPTS", defaults.outbox.max_attempts, minimum=1),
                lease=max(1.0, _seconds(env, "DUI_OUTBOX_LEASE", defaults.outbox.lease)),
            ),
            retention=RetentionSettings(
                outbox_days=_int(env, "DUI_RETENTION_OUTBOX_DAYS", defaults.retention.outbox_days, minimum=1),
                alert_events_days=_int(env, "DUI_RETENTION_ALERT_EVENTS_DAYS", defaults.retention.alert_events_days,
                                       minimum=1),
                mssante_days=_int(env, "DUI_RETENTION_MSSANTE_DAYS", defaults.retention.mssante_days, minimum=1),
                tombstone_days=_int(env, "DUI_RETENTION_TOMBSTONES_DAYS", defaults.retention.tombstone_days,
                                    minimum=1),
            ),
            export=ExportSettings(
                directory=env.get("DUI_EXPORT_DIR") or defaults.export.directory,
                file_bytes=_int(env, "DUI_EXPORT_FILE_BYTES", defaults.export.file_bytes, minimum=65536),
                retention_hours=_int(env, "DUI_EXPORT_RETENTION_HOURS", defaults.export.retention_hours, minimum=1),
            ),
            metrics=MetricsSettings(token=env.get("DUI_METRICS_TOKEN") or None,
                                    directory=env.get("DUI_METRICS_DIR") or None),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse configurations that are unsafe for the chosen environment."""
        check_database_urls(self.database_url, self.read_replica.url)
        if self.is_prod and not self.base_url.startswith("https://"):
            raise SettingsError("DUI_ENV=prod requires an https DUI_BASE_URL")
        if self.is_prod and not (self.encryption.master_key or self.encryption.master_key_file):
            raise SettingsError("DUI_ENV=prod requires a master key for encryption at rest: set DUI_MASTER_KEY_FILE "
                                "(create one with `dui keys generate FILE`)")
        if self.is_prod and not self.audit.key_file:
            raise SettingsError("DUI_ENV=prod requires an audit key: set DUI_AUDIT_KEY_FILE (create one with "
                                "`dui keys generate --audit FILE`)")
        if self.audit.previous_key_files and not self.audit.key_file:
            raise SettingsError("DUI_AUDIT_KEY_PREVIOUS_FILE needs DUI_AUDIT_KEY_FILE (the key that seals from now on)")
        if self.is_prod and self.auth.allow_anonymous:
            raise SettingsError("DUI_AUTH_ALLOW_ANONYMOUS is refused when DUI_ENV=prod: every request must carry "
                                "a token")
        if self.is_prod:
            plain = [origin for origin in self.http.cors_origins if not origin.startswith("https://")]
            if plain:
                raise SettingsError(f"DUI_CORS_ORIGINS must list https origins only when DUI_ENV=prod, not {plain[0]}")
        if self.request_budget and not MIN_BUDGET <= self.request_budget <= MAX_BUDGET:
            raise SettingsError(f"DUI_REQUEST_BUDGET must be 0 (no limit) or between {MIN_BUDGET} and {MAX_BUDGET} "
                                f"seconds, not {self.request_budget:g}")
        if not 30 <= self.auth.token_lifetime <= 3600:
            raise SettingsError("DUI_AUTH_TOKEN_LIFETIME must be between 30 and 3600 seconds")
        token = self.metrics.token
        if token is not None and (len(token) < METRICS_TOKEN_MIN or not token.isascii() or not token.isprintable()
                                  or " " in token):
            raise SettingsError(f"DUI_METRICS_TOKEN must be at least {METRICS_TOKEN_MIN} printable ASCII characters "
                                "without spaces (e.g. `openssl rand -hex 32`)")
        insi = self.insi
        if insi.url is not None:
            if not insi.url.startswith("https://"):
                raise SettingsError("DUI_INSI_URL must be an https URL (INSi is reached over mutual TLS)")
            missing = [name for name, value in (("DUI_INSI_CERT", insi.cert), ("DUI_INSI_KEY", insi.key),
                                                ("DUI_INSI_CA", insi.ca)) if not value]
            if missing:
                raise SettingsError(f"DUI_INSI_URL needs {', '.join(missing)} (the structure certificate, its key "
                                    "and the CA that signs INSi's server certificate)")
            simulator = Path(insi.simulator_dir).resolve()
            for name, value in (("DUI_INSI_CERT", insi.cert), ("DUI_INSI_KEY", insi.key), ("DUI_INSI_CA", insi.ca)):
                if self.is_prod and value and Path(value).resolve().is_relative_to(simulator):
                    raise SettingsError(f"{name} is a file of the development INSi simulator ({insi.simulator_dir}): "
                                        "production refuses it")
        dmp = self.dmp
        if dmp.url:
            if not dmp.url.startswith("https://"):
                raise SettingsError("DUI_DMP_URL must be an https URL (the DMP is reached over mutual TLS)")
            missing = [name for name, value in (("DUI_DMP_CERT", dmp.cert), ("DUI_DMP_CA", dmp.ca),
                                                ("DUI_DMP_SIGNING_CERT", dmp.signing_cert),
                                                ("DUI_DMP_SIGNING_KEY", dmp.signing_key)) if not value]
            if missing:
                raise SettingsError(f"DUI_DMP_URL needs {', '.join(missing)} (the transport certificate, the CA of "
                                    "the DMP's server certificate, the certificate and key that sign the VIHF)")
            if self.is_prod and dmp.structure_id == DmpSettings.structure_id:
                raise SettingsError("DUI_DMP_URL needs DUI_DMP_STRUCTURE_ID (the establishment's idNat in the VIHF)")
        if self.is_prod and self.documents.oid == DEV_DOCUMENT_OID:
            raise SettingsError("DUI_ENV=prod requires the OID your documents are identified under: set "
                                "DUI_DOCUMENT_OID (the development placeholder is refused)")


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"DUI_TIMEZONE must be an IANA time zone such as Europe/Paris, not {name!r}") from None
    return name


_ORIGIN = re.compile(r"(https?)://([a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


def _origins(raw: str) -> tuple[str, ...]:
    """``DUI_CORS_ORIGINS``: origins separated by commas or spaces, each ``scheme://host[:port]`` as a browser
    sends it in ``Origin`` (no path, no trailing slash, no wildcard)."""
    origins: list[str] = []
    for item in raw.replace(",", " ").split():
        origin = item.lower()
        if not _ORIGIN.fullmatch(origin):
            raise SettingsError(f"DUI_CORS_ORIGINS: {item!r} is not an origin such as https://app.example.org "
                                "(scheme, host and port only; no path, no wildcard)")
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


def check_database_urls(database_url: str, read_url: str | None) -> None:
    """``prepare_threshold`` in either URL (dui.db); ``DUI_DATABASE_READ_URL``: a PostgreSQL replica of a PostgreSQL
    primary. Neither URL is quoted back: they may carry passwords."""
    for name, url in (("DUI_DATABASE_URL", database_url), ("DUI_DATABASE_READ_URL", read_url)):
        threshold = re.search(r"[?&]prepare_threshold=([^&]*)", url or "")
        if threshold and not re.fullmatch(r"\d+|none", threshold.group(1).strip().lower()):
            raise SettingsError(f"{name}: prepare_threshold must be a whole number or none (none behind pgbouncer "
                                f"in transaction mode), not {threshold.group(1)[:20]!r}")
    if not read_url:
        return
    if not read_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise SettingsError("DUI_DATABASE_READ_URL must be a postgresql:// URL (a streaming replica of the primary "
                            "DUI_DATABASE_URL names)")
    if not database_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise SettingsError("DUI_DATABASE_READ_URL needs a PostgreSQL DUI_DATABASE_URL: a read replica is a "
                            "PostgreSQL streaming replica of a PostgreSQL primary (unset it with SQLite)")


def _redis_url(raw: str) -> str | None:
    """``DUI_REDIS_URL``: ``redis://[:password@]host:port/db``, ``rediss://`` (TLS) or ``redis+unix:///path``. Never
    quoted back in a message: it may carry a password."""
    url = raw.strip()
    if not url:
        return None
    if not url.startswith(REDIS_SCHEMES):
        raise SettingsError("DUI_REDIS_URL must start with redis://, rediss:// or redis+unix:// (e.g. "
                            "redis://redis.internal:6379/0)")
    return url


def proxy_networks(raw: str) -> tuple[ProxyNetwork, ...]:
    """``DUI_TRUSTED_PROXIES``: the reverse proxies' addresses or networks (IPv4, IPv6, CIDR), separated by commas
    or spaces. A number (the count of proxies this variable once held) is refused: trusting a count lets any
    client that reaches the service directly name its own address."""
    if raw.strip().isdigit():
        raise SettingsError(
            f"DUI_TRUSTED_PROXIES={raw.strip()} is a number of proxies, which lets any client that reaches the "
            "service directly choose its address: list the address of each reverse proxy in front of the service "
            "instead (e.g. DUI_TRUSTED_PROXIES=10.0.0.5, or a network such as 10.0.0.0/24), or leave it unset "
            "when clients connect directly")
    networks: list[ProxyNetwork] = []
    for item in raw.replace(",", " ").split():
        try:
            network = ipaddress.ip_network(item)
        except ValueError:
            loose = None
            with contextlib.suppress(ValueError):
                loose = ipaddress.ip_network(item, strict=False)
            if loose is not None:
                raise SettingsError(f"DUI_TRUSTED_PROXIES: {item!r} has host bits set: write {loose}") from None
            raise SettingsError(f"DUI_TRUSTED_PROXIES: {item!r} is not an IP address or network (such as 10.0.0.5, "
                                "10.0.0.0/24 or 2001:db8::/32)") from None
        if network not in networks:
            networks.append(network)
    return tuple(networks)


_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")


def _validation_modes(raw: str) -> tuple[tuple[str, str], ...]:
    """``DUI_VALIDATION``: ``warn``, or ``Patient=reject,*=warn`` (a mode per resource type, ``*`` for the rest)."""
    modes: dict[str, str] = {}
    for item in raw.replace(",", " ").split():
        rtype, _, mode = item.rpartition("=")
        rtype = rtype or "*"
        if mode not in VALIDATION_MODES or not (rtype == "*" or _TYPE_NAME.fullmatch(rtype)):
            raise SettingsError(f"DUI_VALIDATION: {item!r} is not MODE or TYPE=MODE with MODE one of "
                                f"{', '.join(VALIDATION_MODES)} (e.g. Patient=reject,*=warn)")
        modes[rtype] = mode
    return tuple(modes.items()) or (("*", "warn"),)


def _default_profiles(raw: str) -> tuple[tuple[str, str], ...]:
    """``DUI_DEFAULT_PROFILES``: ``Type=canonical`` pairs (a type may be repeated), or ``none``."""
    if raw.strip().lower() == "none":
        return ()
    pairs: list[tuple[str, str]] = []
    for item in raw.replace(",", " ").split():
        rtype, _, url = item.partition("=")
        if not _TYPE_NAME.fullmatch(rtype) or not url.startswith(("http://", "https://", "urn:")):
            raise SettingsError(f"DUI_DEFAULT_PROFILES: {item!r} is not TYPE=CANONICAL "
                                f"(e.g. {DEFAULT_PROFILES}), or 'none'")
        pairs.append((rtype, url))
    return tuple(pairs)


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, not {value}")
    return value


def _oid(value: str) -> str:
    parts = value.split(".")
    if len(value) > 64 or len(parts) < 2 or not all(p.isdigit() and (p == "0" or not p.startswith("0"))
                                                       for p in parts):
        raise SettingsError(f"DUI_DOCUMENT_OID must be an OID such as 1.2.250.1.999.1, not {value[:70]!r}")
    return value


def _seconds(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number of seconds, not {raw!r}") from None
    if not value >= 0 or value == float("inf"):  # also NaN
        raise SettingsError(f"{key} must be a number of seconds, at least 0, not {raw!r}")
    return value


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{key} must be true or false, not {raw!r}")
