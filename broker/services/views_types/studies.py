"""Answers of the studies' routes (studies of live use, with consent)."""

from __future__ import annotations

from typing_extensions import TypedDict


class StudyView(TypedDict):
    """A study of live use: who registered it, for what, to whom captures are encrypted."""

    id: str
    name: str
    title: str
    purpose: str
    model: str
    """ORG/MODEL (every version) or ORG/MODEL@VERSION (that version only)"""
    recipients: list[str]
    """the age recipients every capture is encrypted to"""
    owner: str
    """the registering researcher's user id"""
    state: str
    """proposed, approved, rejected or closed: only an approved study captures"""
    created_at: str
    decided_at: str | None
    decision_note: str | None
    closed_at: str | None
    consenting: bool
    """whether the caller's consent to it is in force"""


class StudyList(TypedDict):
    studies: list[StudyView]


class StudyConsentView(TypedDict):
    """A person's consent to a study: in force while `withdrawn_at` is null."""

    id: str
    """the participant's pseudonym in the study's captures"""
    study_id: str
    study: str
    """the study's name"""
    given_at: str
    withdrawn_at: str | None


class StudyMemberView(TypedDict):
    """A member of a study's team besides its owner: lists and fetches its captures."""

    user: str
    """the member's user id"""
    name: str | None
    """their display name, as their institution gave it"""
    added_at: str


class StudyMemberList(TypedDict):
    """A study's team besides its owner, in the order they were added."""

    study_id: str
    members: list[StudyMemberView]


class StudyCaptureView(TypedDict):
    """One captured exchange: an age file (to the study's recipients) in the store."""

    id: str
    study_id: str
    size: int
    """bytes of the age file"""
    sha256: str
    """of the age file, as stored"""
    created_at: str


class StudyCaptureList(TypedDict):
    captures: list[StudyCaptureView]
    next: str | None
    """pass as ?after= for the next page; null: this was the last"""


class StudyCaptureUrl(TypedDict):
    """A signed URL of one capture's age file, valid until `expires_at`."""

    id: str
    url: str
    headers: dict[str, str]
    expires_at: str
    size: int
    sha256: str
