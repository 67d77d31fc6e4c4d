"""The projet personnalisé (CASF L311-3): the resident's goals, and the reviews (bilans) that follow them.

Stored as TDDUI 2.2.0 resources (DOMAIN.md §2.3; the IG's examples), so that the TDDUI export carries them as they
are and partners read them through ``/fhir``:

- the projet: one active ``CarePlan`` of the resident (``tddui-careplan-projet-personnalise``, identifier
  ``…projetpersonnalise…`` ``3+FINESS/<local id>-PPER-1``, status active, intent plan), listing its goals
  (``CarePlan.goal``) and its reviews (``CarePlan.activity.reference``);
- each goal: a ``Goal`` (``tddui-goal-objectif``, identifier ``…objectif…`` ``…-OBJE-<n>``, the extension
  ``tddui-careplan-reference`` back to the projet, ``target.dueDate``, the title note "Objectif <n>" marked
  ``titreObjectif``);
- each review: a ``Task`` (``tddui-task-bilan``, based on the projet, ``executionPeriod.start`` the date of the
  review, the text as the ``syntheseBilan`` output, the next review's date as the ``dateProchainBilan`` input). The
  review also sets each goal's ``achievementStatus`` (and closes an achieved or unattainable one). The bilan's
  identifier system (``…bilan…``) and its input and output codes are those of the 2.2.0 ballot's
  ``tddui-task-bilan``: UNCONFIRMED against the published 2.2.0.

The CarePlan is the projet's version: every change (goals added, a review) writes a new version of it, in the same
transaction as the rest. ``If-Match`` (the ETag read) refuses with 412 a change to a projet that changed since it
was read; without it the change applies to the projet as it is (goals and reviews are only ever added).

Who: the care team and the physicians write; they and the direction read (what each role may read and write is
the authorization policy's: by default the direction does not read care data, an establishment grants it in
``DUI_POLICY_FILE``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from dui.auth.actor import Actor
from dui.auth.roles import AES_AMP, AIDE_SOIGNANT, DIRECTION, INFIRMIER, KINESITHERAPEUTE, MEDECIN, PSYCHOLOGUE
from dui.errors import NotFound, PreconditionFailed, Unprocessable
from dui.fhir.interactions.base import parse_etag
from dui.residents.admission import LOCAL_ID_SYSTEM
from dui.residents.provenance import actor_reference
from dui.staff.record import Record, create_entry, editable, instant, update_entry, version_of
from dui.staff.refusals import refuse, require_role
from dui.tddui.profiles import CANONICAL as TDDUI
from dui.tddui.profiles import CARE_PLAN, GOAL_OBJECTIVE, OBJECTIVE_SYSTEM, TASK_REVIEW

WRITERS = frozenset({MEDECIN, INFIRMIER, AIDE_SOIGNANT, AES_AMP, PSYCHOLOGUE, KINESITHERAPEUTE})
READERS = WRITERS | {DIRECTION}

PROJET_SYSTEM = "https://identifiant-medicosocial-projetpersonnalise.esante.gouv.fr"
REVIEW_SYSTEM = "https://identifiant-medicosocial-bilan.esante.gouv.fr"  # 2.2.0 ballot: UNCONFIRMED
CAREPLAN_REFERENCE = f"{TDDUI}/StructureDefinition/tddui-careplan-reference"
DISCRIMINATOR = f"{TDDUI}/StructureDefinition/tddui-discriminator"
DISCRIMINATOR_SYSTEM = f"{TDDUI}/CodeSystem/tddui-discriminator"
REVIEW_INPUT = f"{TDDUI}/CodeSystem/tddui-task-input-bilan"
REVIEW_OUTPUT = f"{TDDUI}/CodeSystem/tddui-task-output-bilan"
ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
# http://hl7.org/fhir/R4/valueset-goal-achievement.html; a review closes the goals it says achieved or unattainable
ACHIEVEMENTS = ("in-progress", "improving", "worsening", "no-change", "achieved", "sustaining", "not-achieved",
                "no-progress", "not-attainable")
CLOSING = {"achieved": "completed", "not-attainable": "cancelled"}
TITLE = "Projet personnalisé"


def read(record: Record, actor: Actor, pid: str) -> tuple[dict[str, Any], int]:
    """The resident's projet (goals and reviews) and its version; 404 when none is written yet."""
    require_role(actor, READERS, "the projet personnalisé is read by the care team, the physicians and the direction",
                 "le projet personnalisé est lu par l'équipe soignante, les médecins et la direction")
    record.read("Patient", pid)
    found = _current(record, pid)
    if found is None:
        raise _none_yet(pid)
    return found


def write_goals(record: Record, actor: Actor, now: datetime, pid: str, goals: list[dict[str, Any]],
                title: str | None, if_match: str | None) -> tuple[dict[str, Any], int]:
    """Add ``goals`` to the resident's projet, creating the projet when she has none; returns the projet and its
    version."""
    require_role(actor, WRITERS, "the projet personnalisé is written by the care team and the physicians",
                 "le projet personnalisé est rédigé par l'équipe soignante et les médecins")
    patient, _ = record.read("Patient", pid)
    record.ctx.repo.current("Patient", pid, for_update=True)  # one projet per resident: writers take turns
    found = _current(record, pid)
    prefix = _prefix(actor, patient)
    plan_url = f"urn:uuid:{uuid.uuid4()}"
    if found is None:
        plan: dict[str, Any] = {
            "resourceType": "CarePlan", "meta": {"profile": [CARE_PLAN.url]},
            "identifier": [{"system": PROJET_SYSTEM, "value": f"{prefix}-PPER-1"}],
            "status": "active", "intent": "plan", "title": title or TITLE,
            "subject": {"reference": f"Patient/{pid}"}, "created": instant(now), "author": actor_reference(actor),
            "goal": []}
        plan_ref, numbered = plan_url, 0
    else:
        current, version = found
        _check(if_match, version)
        plan, _ = _stored(record, "CarePlan", current["id"])
        if title:
            plan["title"] = title
        plan_ref, numbered = f"CarePlan/{plan['id']}", len(plan.get("goal") or [])
    entries = []
    for n, goal in enumerate(goals, start=numbered + 1):
        url = f"urn:uuid:{uuid.uuid4()}"
        plan.setdefault("goal", []).append({"reference": url})
        entries.append(create_entry(_goal(pid, prefix, n, plan_ref, goal, now, record), url))
    if found is None:
        entries.insert(0, create_entry(plan, plan_url))
    else:
        entries.insert(0, update_entry(plan, found[1]))
    record.transaction(entries)
    return _current_or_fail(record, pid)


def review(record: Record, actor: Actor, now: datetime, pid: str, given: dict[str, Any],
           if_match: str | None) -> tuple[dict[str, Any], int]:
    """Record a review (bilan) of the projet: its date, its text, the goals' statuses, the next review's date."""
    require_role(actor, WRITERS, "a review of the projet personnalisé is written by the care team and the "
                 "physicians", "un bilan du projet personnalisé est rédigé par l'équipe soignante et les médecins")
    patient, _ = record.read("Patient", pid)
    record.ctx.repo.current("Patient", pid, for_update=True)
    found = _current(record, pid)
    if found is None:
        raise _none_yet(pid)
    current, version = found
    _check(if_match, version)
    today = now.astimezone(record.ctx.tz).date()
    if given["date"] > today:
        raise refuse(Unprocessable, "A review is recorded once held: its date cannot be in the future",
                     "Un bilan s'enregistre une fois tenu : sa date ne peut pas être dans le futur", "date")
    plan, _ = _stored(record, "CarePlan", current["id"])
    goals = {g["id"]: g for g in current["goals"]}
    entries: list[dict[str, Any]] = []
    for n, change in enumerate(given.get("goals") or []):
        if change["goal_id"] not in goals:
            raise refuse(Unprocessable, f"Goal/{change['goal_id']} is not a goal of this projet",
                         f"Goal/{change['goal_id']} n'est pas un objectif de ce projet", f"goals.{n}.goal_id")
        goal, goal_version = _stored(record, "Goal", change["goal_id"])
        goal["achievementStatus"] = {"coding": [{"system": ACHIEVEMENT, "code": change["status"]}]}
        goal["lifecycleStatus"] = CLOSING.get(change["status"], "active")
        goal["statusDate"] = given["date"].isoformat()
        entries.append(update_entry(goal, goal_version))
    task_url = f"urn:uuid:{uuid.uuid4()}"
    number = len(current["reviews"]) + 1
    plan.setdefault("activity", []).append({"reference": {"reference": task_url}})
    entries.insert(0, update_entry(plan, version))
    entries.append(create_entry(_review(pid, _prefix(actor, patient), number, plan["id"], given, actor, now),
                                task_url))
    record.transaction(entries)
    return _current_or_fail(record, pid)


# -- reading -----------------------------------------------------------------------------------------------


def _current(record: Record, pid: str) -> tuple[dict[str, Any], int] | None:
    found = record.results("CarePlan", [
        ("subject", f"Patient/{pid}"), ("identifier", f"{PROJET_SYSTEM}|"), ("status", "active"),
        ("_sort", "-_lastUpdated"), ("_count", "1"),
        # typed: an untyped activity-reference reaches medication and device requests, which carers may not read
        ("_include", "CarePlan:goal:Goal"), ("_include", "CarePlan:activity-reference:Task")])
    if not found.matches:
        return None
    plan = found.matches[0]
    goals = [found.included.get(ref.get("reference", "")) for ref in plan.get("goal") or []]
    reviews = [found.included.get(((a.get("reference") or {}).get("reference")) or "")
               for a in plan.get("activity") or []]
    version = version_of(plan)
    return {"id": plan["id"], "version": version, "title": plan.get("title"), "status": plan.get("status"),
            "created": plan.get("created"),
            "goals": [_goal_view(g) for g in goals if g is not None],
            "reviews": [_review_view(t) for t in reviews if t is not None and t.get("resourceType") == "Task"]}, version


def _current_or_fail(record: Record, pid: str) -> tuple[dict[str, Any], int]:
    found = _current(record, pid)
    assert found is not None  # just written, in this unit of work
    return found


def _goal_view(goal: dict[str, Any]) -> dict[str, Any]:
    achievement = ((goal.get("achievementStatus") or {}).get("coding") or [{}])[0].get("code")
    target = (goal.get("target") or [{}])[0].get("dueDate")
    title = next((n.get("text") for n in goal.get("note") or []), None)
    return {"id": goal["id"], "version": version_of(goal), "title": title,
            "description": (goal.get("description") or {}).get("text"), "target_date": target,
            "lifecycle_status": goal.get("lifecycleStatus"), "achievement_status": achievement,
            "status_date": goal.get("statusDate")}


def _review_view(task: dict[str, Any]) -> dict[str, Any]:
    text = next((o.get("valueString") for o in task.get("output") or [] if _typed(o, REVIEW_OUTPUT, "syntheseBilan")),
                None)
    following = next((i.get("valueDateTime") for i in task.get("input") or []
                      if _typed(i, REVIEW_INPUT, "dateProchainBilan")), None)
    author = ((task.get("owner") or {}).get("identifier") or {}).get("value")
    return {"id": task["id"], "date": (task.get("executionPeriod") or {}).get("start"), "text": text,
            "next_review": following, "author": author, "recorded": task.get("authoredOn")}


def _typed(part: dict[str, Any], system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code
               for c in (part.get("type") or {}).get("coding") or [])


# -- writing -----------------------------------------------------------------------------------------------


def _prefix(actor: Actor, patient: dict[str, Any]) -> str:
    """``3+FINESS/<the resident's local id>``, the start of every TDDUI business identifier of her record."""
    local = next((i.get("value") for i in patient.get("identifier") or [] if i.get("system") == LOCAL_ID_SYSTEM),
                 None)
    if isinstance(local, str) and "/" in local:
        return local
    return f"3{actor.establishment}/{patient['id']}"


def _goal(pid: str, prefix: str, number: int, plan_ref: str, goal: dict[str, Any], now: datetime,
          record: Record) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Goal", "meta": {"profile": [GOAL_OBJECTIVE.url]},
        "extension": [{"url": CAREPLAN_REFERENCE, "valueReference": {"reference": plan_ref}}],
        "identifier": [{"system": OBJECTIVE_SYSTEM, "value": f"{prefix}-OBJE-{number}"}],
        "lifecycleStatus": "active",
        "achievementStatus": {"coding": [{"system": ACHIEVEMENT, "code": "in-progress"}]},
        "description": {"text": goal["description"]}, "subject": {"reference": f"Patient/{pid}"},
        "startDate": now.astimezone(record.ctx.tz).date().isoformat(),
        "note": [{"extension": [{"url": DISCRIMINATOR, "valueCodeableConcept": {"coding": [
            {"system": DISCRIMINATOR_SYSTEM, "code": "titreObjectif"}]}}], "text": f"Objectif {number}"}],
    }
    if goal.get("target_date"):
        body["target"] = [{"dueDate": goal["target_date"].isoformat()}]
    return body


def _review(pid: str, prefix: str, number: int, plan_id: str, given: dict[str, Any], actor: Actor,
            now: datetime) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task", "meta": {"profile": [TASK_REVIEW.url]},
        "identifier": [{"system": REVIEW_SYSTEM, "value": f"{prefix}-BILA-{number}"}],
        "basedOn": [{"reference": f"CarePlan/{plan_id}"}], "status": "completed", "intent": "plan",
        "description": "Bilan du projet personnalisé", "for": {"reference": f"Patient/{pid}"},
        "executionPeriod": {"start": given["date"].isoformat()}, "authoredOn": instant(now),
        "owner": actor_reference(actor),
        "output": [{"type": {"coding": [{"system": REVIEW_OUTPUT, "code": "syntheseBilan"}]},
                    "valueString": given["text"]}],
    }
    if given.get("next_review"):
        task["input"] = [{"type": {"coding": [{"system": REVIEW_INPUT, "code": "dateProchainBilan"}]},
                          "valueDateTime": given["next_review"].isoformat()}]
    return task


def _stored(record: Record, rtype: str, rid: str) -> tuple[dict[str, Any], int]:
    body, version = record.read(rtype, rid)
    return editable(body), version


def _check(if_match: str | None, version: int) -> None:
    """412 when the client's ETag is not the projet's version (``Invalid`` when it is not an ETag)."""
    if if_match is not None and parse_etag(if_match) != version:
        raise refuse(PreconditionFailed, f"The projet personnalisé changed since it was read (it is at version "
                     f"{version}): read it again and re-apply the change", f"Le projet personnalisé a changé depuis "
                     f"sa lecture (version {version}) : relisez-le puis refaites la modification")


def _none_yet(pid: str) -> NotFound:
    return refuse(NotFound, f"Patient/{pid} has no projet personnalisé yet (POST its goals first)",
                  f"Patient/{pid} n'a pas encore de projet personnalisé (enregistrez d'abord ses objectifs)")

