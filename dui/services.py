"""The long-lived collaborators of the service, built once per process from the settings.

``create_app`` (web) and the CLI both build a ``Services``; a unit of work (request, command, job)
asks it for a FHIR context bound to its own session.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dui import subscriptions
from dui.audit.writer import AuditWriter, writer_for
from dui.auth.actor import SYSTEM, Actor
from dui.auth.authenticator import Authenticator
from dui.auth.policy import Policy
from dui.bulk import jobs as bulk_jobs
from dui.bulk import operations as bulk_operations
from dui.bulk import worker as bulk_worker
from dui.clock import Clock, utc_now
from dui.crypto.keyring import Keyring, keyring_for
from dui.db import advisory_lock, make_engine, make_session_factory, unit_of_work
from dui.dmp.gateway import DmpGateway
from dui.documents import dmp_feed, freshness, inbound
from dui.documents import fhir_operations as document_operations
from dui.errors import Issue, Unavailable
from dui.fhir.interactions.base import BundleRule, FhirContext, Operation, WriteRule
from dui.fhir.repository import FhirRepository
from dui.fhir.scope import Residents, Scope, Sight
from dui.fhir.scoped import ScopedRepository
from dui.fhir.search.indexer import Indexer
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.validation import Validator
from dui.messaging import inbox, receiving, sending
from dui.outbox.runner import Handler, bind
from dui.profiles import catalogue
from dui.profiles import store as profile_store
from dui.profiles.registry import ProfileRegistry
from dui.replica import ReadRouter
from dui.residents import fhir_operations, rules, sharing
from dui.settings import Settings, SettingsError, check_database_urls
from dui.tddui import consumer as tddui_consumer
from ins.insi.client import InsiClient
from mssante.transport import MailReceiver, MailSender


def dui_version() -> str:
    """The installed version of the service (LPS_Version of the VIHF)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dui")
    except PackageNotFoundError:
        return "0+unknown"


def load_policy(path: str | None) -> Policy:
    """The authorization policy: the defaults, overridden by the JSON file ``DUI_POLICY_FILE`` names."""
    if not path:
        return Policy()
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("expected a JSON object")
        return Policy.with_overrides(config)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"DUI_POLICY_FILE {path}: {exc}") from None


SCOPED_KINDS = frozenset({"staff", "client", "device"})  # actors bound by the access rules of dui.fhir.scope


class SimulatorWarning(UserWarning):
    """A development stand-in for a national service is in use."""


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    registry: SearchParameterRegistry
    indexer: Indexer
    validator: Validator
    clock: Clock = field(default=utc_now)
    insi_factory: Callable[[], InsiClient] | None = None
    write_rules: Mapping[str, WriteRule] = field(default_factory=dict)
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)
    bundle_rules: tuple[BundleRule, ...] = (tddui_consumer.transfer_rule,)
    # What ``dui worker`` runs for each kind of outbox job ("dmp.send": ...), filled by the features that enqueue.
    outbox_handlers: dict[str, Handler] = field(default_factory=dict)
    _insi: InsiClient | None = None
    _simulator: Any = None
    _dmp: DmpGateway | None = None
    _dmp_simulator: Any = None
    dmp_factory: Callable[[], DmpGateway] | None = None  # tests: the in-memory twin, or a gateway to a simulator
    # tests: the in-memory mailbox (mssante.InMemoryMailbox), or clients of test servers
    mail_sender_factory: Callable[[], MailSender] | None = None
    mail_receiver_factory: Callable[[], MailReceiver] | None = None
    _insi_lock: threading.Lock = field(default_factory=threading.Lock)
    _dmp_lock: threading.Lock = field(default_factory=threading.Lock)
    keyring: Keyring = field(init=False)
    authenticator: Authenticator = field(init=False)
    policy: Policy = field(init=False)
    profiles: ProfileRegistry = field(init=False)
    residents: Residents = field(init=False)
    # DUI_DATABASE_READ_URL: which database serves a read-only request (dui.replica); None: the primary, always
    reads: ReadRouter | None = field(init=False, default=None)
    # Audit entries with no transaction of their own (reads, refusals), group-committed before each answer is sent
    audit_writer: AuditWriter = field(init=False)

    def __post_init__(self) -> None:
        self.operations = {**fhir_operations.build(self.insi), **document_operations.build(),
                           **bulk_operations.build()}
        # What ``dui worker`` delivers after commit (dui.outbox), as the system: the DMP feed through self.dmp(),
        # MSSanté's sends and acknowledgements through self.mail_sender()
        def as_system(session: Session) -> FhirContext:
            return self.fhir_context(session, SYSTEM)

        handlers = self.outbox_handlers
        handlers.setdefault(dmp_feed.KIND, bind(dmp_feed.deliver_job, as_system, self.dmp))
        handlers.setdefault(dmp_feed.UPDATE_KIND, bind(dmp_feed.deliver_update, as_system, self.dmp))
        handlers.setdefault(sending.KIND, bind(sending.deliver_send, as_system, self.mail_sender))
        # the MDNs answering mail received (dui.messaging.receiving), sent after the poll's commit
        handlers.setdefault(receiving.MDN_KIND, bind(receiving.deliver_mdn, as_system, self.mail_sender))
        # FHIR Subscriptions: which ones a change concerns (searched as each owner client), then the rest-hook calls
        # FHIR Bulk Data exports, run as their requester (dui.bulk.worker)
        handlers.setdefault(bulk_jobs.KIND, partial(bulk_worker.run_export, svc=self))
        handlers.setdefault(subscriptions.MATCH_KIND, partial(subscriptions.match, context_of=self.fhir_context))
        handlers.setdefault(subscriptions.NOTIFY_KIND, partial(subscriptions.notify, context_of=self.fhir_context,
                                                                public_only=self.settings.is_prod))
        self.residents = Residents(self.indexer)  # whose record a resource is, its grants (dui.fhir.scope)
        if not self.write_rules:
            self.write_rules = {"Patient": partial(rules.prepare_patient, production=self.settings.is_prod),
                                "Task": inbox.task_rule,  # the MSSanté reconciliation Tasks: the queue's own
                                "Subscription": partial(subscriptions.prepare, registry=self.registry,
                                                        limits=self.settings.limits,
                                                        production=self.settings.is_prod)}
        # Encryption at rest: the master keys are read here (a bad or, in prod, a development key stops start-up).
        self.keyring = keyring_for(self.settings)
        # Who is calling: access tokens, OIDC issuers (DUI_AUTH_OIDC_ISSUERS is read here: a bad file stops start-up).
        self.authenticator = Authenticator(self.settings, self.session_factory, self.clock)
        # What each role may do: the defaults, with the establishment's overrides (a bad file stops start-up).
        self.policy = load_policy(self.settings.policy_file)
        # The profiles in force (shipped + installed packages) and the business rules ``$validate`` reports.
        self.profiles = ProfileRegistry(self.session_factory, self.settings.validation)
        self.validator.profiles = self.profiles.validator
        self.validator.rules.setdefault("Patient", self._identity_issues)
        self.audit_writer = writer_for(self.engine, self.session_factory, self.clock)
        replica = self.settings.read_replica
        if replica.url:
            check_database_urls(self.settings.database_url, replica.url)  # also for settings made in code
            self.reads = ReadRouter(replica, self.session_factory, self.settings.statement_timeout_ms / 1000)

    @classmethod
    def build(cls, settings: Settings, clock: Clock = utc_now,
              insi: Callable[[], InsiClient] | None = None) -> Services:
        """``insi`` replaces the INSi client the settings describe (tests pass the in-memory twin)."""
        engine = make_engine(settings.database_url, settings.statement_timeout_ms / 1000, hide_parameters=True)
        registry = SearchParameterRegistry()
        # the DUI's own (identity-status), their urls under this deployment's api base
        registry.add_definitions(catalogue.own_definitions(settings.api_canonical_base))
        registry.full_text = settings.text_search
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            registry=registry,
            indexer=Indexer(registry, settings.fhir_base, settings.timezone),
            validator=Validator(),
            clock=clock,
            insi_factory=insi,
        )

    def _identity_issues(self, patient: dict[str, Any]) -> list[Issue]:
        today = self.clock().astimezone(ZoneInfo(self.settings.timezone)).date()
        return rules.identity_issues(patient, today)

    def insi(self) -> InsiClient:
        """The INSi client, built on first use: the configured service, or the local simulator in ``dev``."""
        with self._insi_lock:
            if self._insi is None:
                self._insi = self.insi_factory() if self.insi_factory else self._configured_insi()
            return self._insi

    def mail_sender(self) -> MailSender:
        """The MSSanté SMTP submission client (built per use: a connection per message); ``Unavailable`` when
        MSSanté is not configured."""
        if self.mail_sender_factory is not None:
            return self.mail_sender_factory()
        conf = self.settings.mssante
        if not conf.can_send:
            raise Unavailable(conf.missing("send"))
        from mssante import SmtpSender

        assert conf.smtp_url and conf.cert and conf.key and conf.ca
        return SmtpSender(conf.smtp_url, cert_file=conf.cert, key_file=conf.key, ca_file=conf.ca,
                          timeout=conf.timeout)

    def mail_receiver(self) -> MailReceiver | None:
        """The MSSanté IMAP client of the establishment's mailbox, or None when nothing is to be polled."""
        if self.mail_receiver_factory is not None:
            return self.mail_receiver_factory()
        conf = self.settings.mssante
        if not conf.can_receive:
            return None
        from mssante import ImapReceiver

        assert conf.imap_url and conf.cert and conf.key and conf.ca
        return ImapReceiver(conf.imap_url, cert_file=conf.cert, key_file=conf.key, ca_file=conf.ca,
                            timeout=conf.timeout)

    def dmp(self) -> DmpGateway:
        """The DMP gateway, built on first use: the configured DMP, or the local DMP simulator in ``dev``."""
        with self._dmp_lock:
            if self._dmp is None:
                self._dmp = self.dmp_factory() if self.dmp_factory else self._configured_dmp()
            return self._dmp

    def _configured_dmp(self) -> DmpGateway:
        from dui.dmp.metadata import Code
        from dui.dmp.soap import SoapDmpGateway
        from dui.dmp.vihf import VihfContext

        conf = self.settings.dmp
        vihf = VihfContext(subject_nameid=conf.structure_id, subject_name="DUI", structure_id=conf.structure_id,
                           sector="SA17^1.2.250.1.71.4.2.4",
                           roles=(Code("10", "1.2.250.1.213.1.1.4.5", "Médecin"),),  # UNCONFIRMED (docs/dmp.md)
                           ins="", ins_oid="", lps_name="DUI", lps_version=dui_version(),
                           lps_homologation="NON-HOMOLOGUE")
        source_id = self.settings.documents.oid
        if conf.url and conf.cert and conf.ca and conf.signing_cert and conf.signing_key:
            return SoapDmpGateway(conf.url, conf.cert, conf.key, conf.ca, Path(conf.signing_cert).read_bytes(),
                                  Path(conf.signing_key).read_bytes(), conf.timeout, vihf=vihf, source_id=source_id,
                                  allow_simulator=not self.settings.is_prod)
        if self.settings.is_prod:
            raise Unavailable("The DMP is not configured: set DUI_DMP_URL, DUI_DMP_CERT, DUI_DMP_KEY, DUI_DMP_CA, "
                              "DUI_DMP_SIGNING_CERT and DUI_DMP_SIGNING_KEY")
        from dui.dmp.simulator import DmpSimulator, make_signing_pki
        from ins.insi.pki import make_pki

        warnings.warn("DUI_DMP_URL is not set: documents go to the local DMP simulator (development only)",
                      SimulatorWarning, stacklevel=2)
        pki = make_pki(Path(conf.simulator_dir))
        cachet = make_signing_pki(Path(conf.simulator_dir))
        self._dmp_simulator = DmpSimulator(pki, vihf_ca=cachet.ca_cert).start()
        return SoapDmpGateway(self._dmp_simulator.url, str(pki.client_cert), str(pki.client_key), str(pki.ca_cert),
                              cachet.cert.read_bytes(), cachet.key.read_bytes(), conf.timeout, vihf=vihf,
                              source_id=source_id)

    def _configured_insi(self) -> InsiClient:
        from ins.insi.soap import SoapInsiClient

        conf = self.settings.insi
        if conf.url and conf.cert and conf.key and conf.ca:
            return SoapInsiClient(conf.url, conf.cert, conf.key, conf.ca, timeout=conf.timeout,
                                  allow_simulator=not self.settings.is_prod)
        if self.settings.is_prod:
            raise Unavailable("INSi is not configured: set DUI_INSI_URL, DUI_INSI_CERT, DUI_INSI_KEY and DUI_INSI_CA")
        from ins.insi.pki import make_pki
        from ins.insi.simulator import InsiSimulator

        warnings.warn("DUI_INSI_URL is not set: INSi calls go to the local INSi simulator (development only)",
                      SimulatorWarning, stacklevel=2)
        pki = make_pki(Path(conf.simulator_dir))
        from dui.demo.register import demo_register

        self._simulator = InsiSimulator(demo_register(), pki=pki)  # its register knows the demo residents
        self._simulator.start()
        return SoapInsiClient(self._simulator.url, str(pki.client_cert), str(pki.client_key), str(pki.ca_cert),
                              timeout=conf.timeout)

    def repository(self, session: Session, *, serving: bool = False) -> SqlFhirRepository:
        """The store of one unit of work. ``serving``: the writer of the conformance resources served from the
        installed packages and the shipped definitions (``dui.profiles.catalogue.sync``); every other writer is
        refused them (``catalogue.guard``)."""
        return SqlFhirRepository(session, self.indexer, self.clock, self.keyring,
                                 # a change the DLU shows makes it stale; a change of how a document is to be shown
                                 # in the DMP queues its update there
                                 listeners=(freshness.on_change, dmp_feed.on_change,
                                            # a watched change queues its matching against the Subscriptions
                                            subscriptions.on_change),
                                 guard=None if serving else catalogue.guard)

    def sync_conformance(self, session: Session) -> catalogue.SyncResult:
        """Serve the conformance resources of the installed packages and of the service itself (``dui profiles
        install|remove|sync``, ``dui db upgrade``), in ``session``'s transaction: one sync at a time."""
        advisory_lock(session, catalogue.SYNC_LOCK)
        packages = profile_store.load_packages(session, skip_unreadable=True)
        return catalogue.sync(self.repository(session, serving=True), packages, self.settings.api_canonical_base,
                              self.clock())

    def publish_api_base(self) -> tuple[str | None, catalogue.SyncResult] | None:
        """When the api base in force (``DUI_CANONICAL_BASE``, by default the FHIR base) is not the one the served
        OperationDefinitions and SearchParameters name (``DUI_BASE_URL`` changed, another port), sync them; each
        worker of ``dui serve`` asks as it starts, and the first one does it. Returns the base they named and what
        changed, None when nothing had to."""
        with self.unit_of_work(write=True) as session:
            advisory_lock(session, catalogue.SYNC_LOCK)  # the worker that comes second finds it done
            recorded = catalogue.served_api_base(session)
            if recorded == self.settings.api_canonical_base:
                return None
            return recorded, self.sync_conformance(session)

    def fhir_context(self, session: Session, actor: Actor, break_glass: str | None = None) -> FhirContext:
        """The context of one unit of work. A staff member or an API client reads and writes through the access
        rules (``ScopedRepository``: an actor tied to an organization sees only its residents); an actor outside
        the establishment sees through the sharing gate. ``break_glass``: the reason given with
        ``X-Break-Glass``."""
        store = self.repository(session)
        repo: FhirRepository = store
        planned: set[str] = set()
        if actor.kind in SCOPED_KINDS:
            now = self.clock()
            sight = (Sight(Scope(actor.establishment, now), session, self.residents, store.flush)
                     if actor.establishment else None)
            repo = ScopedRepository(store, actor, sight, self.residents, now, planned)
        if sharing.is_external(actor):
            repo = sharing.GatedRepository(repo)
        return FhirContext(
            break_glass=break_glass,
            planned=planned,
            repo=repo,
            store=store,
            write_rules=self.write_rules,
            operations=self.operations,
            bundle_rules=self.bundle_rules,
            filers={"DocumentReference": inbound.filer, "Subscription": subscriptions.filer},
            policy=self.policy,
            registry=self.registry,
            validator=self.validator,
            settings=self.settings,
            actor=actor,
            clock=self.clock,
            profiles=self.profiles.context,
        )

    def unit_of_work(self, write: bool = True) -> AbstractContextManager[Session]:
        """A session in a transaction (``dui.db.unit_of_work``), committed if the block ends normally."""
        return unit_of_work(self.session_factory, write)

    def dispose(self) -> None:
        if self._simulator is not None:
            self._simulator.stop()
        if self._dmp_simulator is not None:
            self._dmp_simulator.stop()
        if self.reads is not None:
            self.reads.dispose()
        self.audit_writer.close()
        self.engine.dispose()
