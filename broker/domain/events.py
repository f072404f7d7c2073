"""The audit log's vocabulary: every action an event may record, defined once.

A member is its string (`StrEnum`): the leaf holds the same bytes as the plain string did
(tests/audit/test_leaf_bytes.py compares them with leaves stored before this type existed), and
the `audit_events.action` column keeps its strings. A misspelt member fails the type check.
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    AGREEMENT_AMENDED = "agreement.amended"
    AGREEMENT_ATTACHED = "agreement.attached"
    AGREEMENT_CHANGE_REFUSED = "agreement.change_refused"
    AGREEMENT_CHECKIN = "agreement.checkin"
    AGREEMENT_LAB_RELEASED = "agreement.lab_released"
    AGREEMENT_REMOVED = "agreement.removed"
    AGREEMENT_TRIGGERED = "agreement.triggered"
    AGREEMENT_VOTE_WITHDRAWN = "agreement.vote_withdrawn"
    AGREEMENT_VOTED = "agreement.voted"
    CUSTODY_KEY_SPLIT = "custody.key_split"
    CUSTODY_ROTATION_FINISHED = "custody.rotation_finished"
    CUSTODY_ROTATION_STARTED = "custody.rotation_started"
    DEPOSIT_CREATED = "deposit.created"
    DEPOSIT_FILE_RESTARTED = "deposit.file_restarted"
    DEPOSIT_FILE_UPLOADED = "deposit.file_uploaded"
    DEPOSIT_FINALIZED = "deposit.finalized"
    DEPOSIT_MARKED_CLASSICAL = "deposit.marked_classical"
    DEPOSIT_MIRROR_FAILED = "deposit.mirror_failed"
    DEPOSIT_MIRRORED = "deposit.mirrored"
    DEPOSIT_REOPENED = "deposit.reopened"
    DEPOSIT_SEALED = "deposit.sealed"
    DEPOSIT_UPLOAD_ABORTED = "deposit.upload_aborted"
    DEPOSIT_UPLOAD_LOST = "deposit.upload_lost"
    DEPOSIT_VERIFICATION_FAILED = "deposit.verification_failed"
    DEPOSIT_VERIFICATION_PASSED = "deposit.verification_passed"
    DEVICE_APPROVED = "device.approved"
    DEVICE_DENIED = "device.denied"
    ESCROW_RECOVERED = "escrow.recovered"
    FIXITY_COMPLETED = "fixity.completed"
    FIXITY_FAILED = "fixity.failed"
    FIXITY_INCOMPLETE = "fixity.incomplete"
    FIXITY_PASSED = "fixity.passed"
    FIXITY_REPAIRED = "fixity.repaired"
    GRANT_CLOSED = "grant.closed"
    GRANT_CREATED = "grant.created"
    GRANT_REVOKED = "grant.revoked"
    HOSTED_KEY_CREATED = "hosted_key.created"
    HOSTED_KEY_REVOKED = "hosted_key.revoked"
    HOSTED_USAGE = "hosted.usage"
    KEY_PROVEN = "key.proven"
    KEY_REGISTERED = "key.registered"
    KEY_RELEASE_REFUSED = "key.release_refused"
    KEY_RELEASED = "key.released"
    KEY_RETIRED = "key.retired"
    LOGIN_LINK_CREATED = "login_link.created"
    MODEL_CREATED = "model.created"
    MODEL_WORKER_LOADED = "model_worker.loaded"
    MODEL_WORKER_STOPPED = "model_worker.stopped"
    NDA_SIGNED = "nda.signed"
    NDA_SSH_SIGNATURE_ADDED = "nda.ssh_signature_added"
    ORG_CREATED = "org.created"
    REQUEST_CREATED = "request.created"
    REQUEST_WITHDRAWN = "request.withdrawn"
    REVIEW_APPROVED = "review.approved"
    REVIEW_DENIED = "review.denied"
    ROLE_GRANTED = "role.granted"
    ROLE_REVOKED = "role.revoked"
    SIGNING_KEY_CREATED = "signing_key.created"
    TOKEN_CREATED = "token.created"  # noqa: S105 (a name, no secret)
    TOKEN_ISSUED = "token.issued"  # noqa: S105 (a name, no secret)
    TOKEN_REPLAYED = "token.replayed"  # noqa: S105 (a name, no secret)
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 (a name, no secret)
    USER_CREATED = "user.created"
    USER_LOGIN = "user.login"
    USER_LOGOUT = "user.logout"
    VERSION_QUARANTINE_LIFTED = "version.quarantine_lifted"
    VERSION_QUARANTINED = "version.quarantined"
    VERSION_REKEY_FAILED = "version.rekey_failed"
    VERSION_REKEY_REQUESTED = "version.rekey_requested"
    VERSION_REKEYED = "version.rekeyed"
