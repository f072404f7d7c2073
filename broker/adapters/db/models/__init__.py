"""SQLAlchemy 2 tables, one module per area. The schema itself changes only through alembic
migrations (migrations/env.py autogenerates against `Base.metadata`).

Importing this package imports every module, so that `Base.metadata` holds every table and
every relationship's string target resolves; import the names from here."""

from broker.adapters.db.models.access import (
    AccessRequest,
    Grant,
    GrantCloseout,
    KeyRelease,
    NdaSignature,
    NdaSignatureContext,
    Review,
)
from broker.adapters.db.models.agreements import (
    AgreementCheckin,
    AgreementRelease,
    AgreementVote,
    AgreementVoteChallenge,
    ReleaseAgreement,
)
from broker.adapters.db.models.audit import (
    AuditCheckpoint,
    AuditEvent,
    AuditHead,
    SigningKey,
)
from broker.adapters.db.models.base import (
    NAMING_CONVENTION,
    Base,
    UTCDateTime,
    utcnow,
)
from broker.adapters.db.models.deposits import (
    Deposit,
    DepositFile,
    Model,
    Organisation,
    Rekey,
    RekeyFile,
    StoredObject,
)
from broker.adapters.db.models.hosting import (
    HostedKey,
    HostedUsage,
    ModelWorker,
)
from broker.adapters.db.models.jobs import (
    IdempotencyRecord,
    Job,
    OutboxMessage,
    Worker,
)
from broker.adapters.db.models.people import (
    DeviceAuthorization,
    GlobalRole,
    LoginLink,
    LoginSession,
    Membership,
    ResearcherKey,
    ServiceToken,
    User,
    UserProfile,
    UserToken,
)
from broker.adapters.db.models.studies import (
    Study,
    StudyCapture,
    StudyCaptureReport,
    StudyConsent,
    StudyMember,
)

__all__ = [
    "AccessRequest",
    "AgreementCheckin",
    "AgreementRelease",
    "AgreementVote",
    "AgreementVoteChallenge",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Deposit",
    "DepositFile",
    "DeviceAuthorization",
    "GlobalRole",
    "Grant",
    "GrantCloseout",
    "HostedKey",
    "HostedUsage",
    "IdempotencyRecord",
    "Job",
    "KeyRelease",
    "LoginLink",
    "LoginSession",
    "Membership",
    "Model",
    "ModelWorker",
    "NAMING_CONVENTION",
    "NdaSignature",
    "NdaSignatureContext",
    "Organisation",
    "OutboxMessage",
    "Rekey",
    "RekeyFile",
    "ReleaseAgreement",
    "ResearcherKey",
    "Review",
    "ServiceToken",
    "SigningKey",
    "StoredObject",
    "Study",
    "StudyCapture",
    "StudyCaptureReport",
    "StudyConsent",
    "StudyMember",
    "UTCDateTime",
    "User",
    "UserProfile",
    "UserToken",
    "Worker",
    "utcnow",
]
