"""The validation context of one process: the shipped DUI profiles plus the installed packages.

Built on first use and rebuilt when the installed packages change (another process may install one):
the package table's state is read at most every ``ttl`` seconds, with a session of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from dui.profiles import store
from dui.settings import ValidationSettings
from fhir_profiles.context import Context
from fhir_profiles.validator import ProfileValidator
from fhir_profiles.vitals import vital_sign_profiles

REFRESH_SECONDS = 5.0


class ProfileRegistry:
    """Hands out the current ``ProfileValidator``; safe to share between threads."""

    def __init__(self, session_factory: sessionmaker[Session], settings: ValidationSettings, *,
                 ttl: float = REFRESH_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._sessions = session_factory
        self._settings = settings
        self._ttl = ttl
        self._now = monotonic
        self._lock = threading.Lock()
        self._state: tuple[tuple[int, str], ...] | None = None
        self._checked = float("-inf")
        self._validator: ProfileValidator | None = None
        self._context: Context | None = None

    def validator(self) -> ProfileValidator:
        """The validator over what is in force now (at most ``ttl`` seconds old)."""
        current = self._validator
        if current is not None and self._now() - self._checked < self._ttl:
            return current
        with self._lock:
            if self._validator is None or self._now() - self._checked >= self._ttl:
                self._refresh()
            assert self._validator is not None
            return self._validator

    def warm_up(self) -> None:
        """Build the context and compile the default profiles now (at start-up), not inside the first writes:
        a cold validator takes a few hundred milliseconds, which a write would spend holding its locks."""
        validator = self.validator()
        for rtype, _url in self._settings.default_profiles:
            validator.validate({"resourceType": rtype})

    def context(self) -> Context:
        self.validator()
        assert self._context is not None
        return self._context

    def invalidate(self) -> None:
        """Forget the cached state: the next use reads the installed packages again."""
        with self._lock:
            self._checked = float("-inf")

    def _refresh(self) -> None:
        with self._sessions() as session:
            try:
                state = store.state(session)
            except (OperationalError, ProgrammingError):  # not migrated yet: the shipped profiles only
                session.rollback()
                state = ()
            if state != self._state or self._validator is None:
                packages = store.load_packages(session, skip_unreadable=True) if state else []
                defaults: dict[str, list[str]] = {}
                for rtype, url in self._settings.default_profiles:
                    defaults.setdefault(rtype, []).append(url)
                from fhir_profiles.validator import ProfileValidator


                self._context = Context(packages)
                # R4's vital-sign profiles, on the Observations whose code is a vital sign (docs/profiles.md)
                self._validator = ProfileValidator(self._context, defaults, implied=vital_sign_profiles)
                self._state = state
        self._checked = self._now()

