"""The long-lived collaborators of the service, built once per process from the settings.

``create_app`` (web) and the CLI both build a ``Services``; a unit of work (request, command, job)
asks it for a FHIR context bound to its own session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dui.auth.actor import Actor
from dui.clock import Clock, utc_now
from dui.db import begin_read, begin_write, make_engine, make_session_factory
from dui.fhir.interactions.base import FhirContext
from dui.fhir.search.indexer import Indexer
from dui.fhir.search.parameters import SearchParameterRegistry
from dui.fhir.sql import SqlFhirRepository
from dui.fhir.validation import Validator
from dui.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    registry: SearchParameterRegistry
    indexer: Indexer
    validator: Validator
    clock: Clock = field(default=utc_now)

    @classmethod
    def build(cls, settings: Settings, clock: Clock = utc_now) -> Services:
        engine = make_engine(settings.database_url, settings.statement_timeout, hide_parameters=True)
        registry = SearchParameterRegistry()
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            registry=registry,
            indexer=Indexer(registry, settings.fhir_base, settings.timezone),
            validator=Validator(),
            clock=clock,
        )

    def repository(self, session: Session) -> SqlFhirRepository:
        return SqlFhirRepository(session, self.indexer, self.clock)

    def fhir_context(self, session: Session, actor: Actor) -> FhirContext:
        return FhirContext(
            repo=self.repository(session),
            registry=self.registry,
            validator=self.validator,
            settings=self.settings,
            actor=actor,
            clock=self.clock,
        )

    @contextmanager
    def unit_of_work(self, write: bool = True) -> Iterator[Session]:
        """A session in a transaction, committed if the block ends normally, else rolled back.

        A writing unit starts with ``begin_write`` (BEGIN IMMEDIATE on SQLite); a reading one with
        ``begin_read`` (no transaction round trips on PostgreSQL).
        """
        session = self.session_factory()
        try:
            if write:
                begin_write(session)
            else:
                begin_read(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
