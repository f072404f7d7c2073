"""The JSON answers of the API, as types: the one source of the contract.

The services build their answers as these TypedDicts (mypy checks every member they write: a
misspelt, missing or extra key is an error), and the OpenAPI document's schemas are derived from
them (`broker/http/openapi.py`, with pydantic). A member's description is the docstring under
it; a class's docstring describes the object. `NotRequired`: a member that is sometimes absent;
`X | None`: present, and null when there is no value.

No Flask, no pydantic here: services import this module. `typing_extensions.TypedDict` because
pydantic reads only that one on Python < 3.12.
"""

from __future__ import annotations

from typing_extensions import is_typeddict

from broker.services.views_types.access import (
    CloseoutStatus,
    CloseoutView,
    DecisionView,
    Explanation,
    GrantFile,
    GrantList,
    GrantView,
    ManifestSignature,
    PolicyRef,
    ProvenKey,
    QuarantineView,
    RecordedPolicy,
    RekeyView,
    ReleasedKey,
    RenewedGrant,
    RequestList,
    RequestOutcome,
    RequestView,
    ResearcherFacts,
    ReviewQueue,
    ReviewView,
    SignedManifest,
    SignedNda,
)
from broker.services.views_types.agreements import (
    AgreementAttached,
    AgreementCheckinView,
    AgreementReleaseView,
    AgreementRemoved,
    AgreementTrigger,
    AgreementView,
    AgreementVoteChallengeView,
    AgreementVoteMessage,
    AgreementVoteResult,
    AgreementVoteView,
    AgreementVoteWithdrawn,
)
from broker.services.views_types.audit import (
    AuditActor,
    AuditEventPage,
    AuditEventView,
    Checkpoint,
    ConsistencyProof,
    InclusionProof,
    RawEntries,
    RawEntry,
)
from broker.services.views_types.catalog import (
    Approvals,
    CatalogModel,
    CatalogVersion,
    Eligibility,
    GrantTerms,
    ModelList,
    NdaTerm,
    PolicyView,
)
from broker.services.views_types.deposits import (
    DepositFileView,
    DepositView,
    FileCompleted,
    HeaderRegistered,
    PresignedPart,
    PresignedParts,
    UploadedPartView,
    UploadStart,
    VerificationView,
)
from broker.services.views_types.hosted import (
    WorkerHeartbeat,
    WorkerRegistration,
    WorkerStopped,
)
from broker.services.views_types.keys_ndas import (
    KeyList,
    KeyState,
    KeyType,
    KeyView,
    NdaList,
    NdaSignatureList,
    NdaSignatureView,
    NdaSummary,
    NdaTextView,
    NdaVersion,
)
from broker.services.views_types.people import (
    CallerView,
    CheckpointKey,
    Done,
    Health,
    HealthCheck,
    MemberList,
    MemberView,
    PublishedKey,
    PublishedKeys,
    Roles,
)

__all__ = [
    "AgreementAttached",
    "AgreementCheckinView",
    "AgreementReleaseView",
    "AgreementRemoved",
    "AgreementTrigger",
    "AgreementView",
    "AgreementVoteChallengeView",
    "AgreementVoteMessage",
    "AgreementVoteResult",
    "AgreementVoteView",
    "AgreementVoteWithdrawn",
    "Approvals",
    "AuditActor",
    "AuditEventPage",
    "AuditEventView",
    "CallerView",
    "CatalogModel",
    "CatalogVersion",
    "Checkpoint",
    "CloseoutStatus",
    "CloseoutView",
    "CheckpointKey",
    "ConsistencyProof",
    "DecisionView",
    "DepositFileView",
    "DepositView",
    "Done",
    "Eligibility",
    "Explanation",
    "FileCompleted",
    "GrantFile",
    "GrantList",
    "GrantTerms",
    "GrantView",
    "HeaderRegistered",
    "Health",
    "HealthCheck",
    "InclusionProof",
    "KeyList",
    "KeyState",
    "KeyType",
    "KeyView",
    "ManifestSignature",
    "MemberList",
    "MemberView",
    "ModelList",
    "NdaList",
    "NdaSignatureList",
    "NdaSignatureView",
    "NdaSummary",
    "NdaTerm",
    "NdaTextView",
    "NdaVersion",
    "PolicyRef",
    "PolicyView",
    "PresignedPart",
    "PresignedParts",
    "ProvenKey",
    "PublishedKey",
    "PublishedKeys",
    "QuarantineView",
    "WorkerHeartbeat",
    "WorkerRegistration",
    "WorkerStopped",
    "RawEntries",
    "RawEntry",
    "RecordedPolicy",
    "RekeyView",
    "ReleasedKey",
    "RenewedGrant",
    "RequestList",
    "RequestOutcome",
    "RequestView",
    "ResearcherFacts",
    "ReviewQueue",
    "ReviewView",
    "Roles",
    "SignedManifest",
    "SignedNda",
    "UploadStart",
    "UploadedPartView",
    "VerificationView",
]

# Attribute docstrings become the members' descriptions in the OpenAPI document (pydantic's
# `use_attribute_docstrings`, given as the plain dict it is: no pydantic import here).
for _shape in list(globals().values()):
    if is_typeddict(_shape):
        _shape.__pydantic_config__ = {"use_attribute_docstrings": True}
