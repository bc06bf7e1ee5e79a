"""Named errors. Every domain error maps to exactly one HTTP status and one stable problem code."""

from __future__ import annotations

from typing import Any, ClassVar

from ledger.core import limits

# How every refusal is sent (RFC 9457), and replayed from a stored Idempotency-Key response.
PROBLEM_MEDIA_TYPE = "application/problem+json"


class ConfigurationError(Exception):
    """The process cannot start with the settings it was given."""


class ExtraNotInstalled(ConfigurationError):
    """A command needs a package of an optional extra (`dev` for the embedded servers, `bench`
    for the load generator) that this install left out: a plain `pip install` is the service."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; it comes with the '{extra}' extra: "
            f"pip install 'ledger-service[{extra}]'"
        )
        self.package = package
        self.extra = extra


class LedgerError(Exception):
    """A refusal the client can act on; rendered as an RFC 9457 problem."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "unprocessable"
    title: ClassVar[str] = "Unprocessable request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://ledger.dev/problems/{self.code.replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        body.update(self.extra)
        return body


class ValidationFailed(LedgerError):
    status = 422
    code = "validation_error"
    title = "Request validation failed"


class AccountNotFound(LedgerError):
    status = 404
    code = "account_not_found"
    title = "Account not found"


class TransferNotFound(LedgerError):
    status = 404
    code = "transfer_not_found"
    title = "Transfer not found"


class ApiKeyNotFound(LedgerError):
    status = 404
    code = "api_key_not_found"
    title = "API key not found"


class AccountCodeExists(LedgerError):
    status = 409
    code = "account_code_exists"
    title = "Account code taken"


class AccountExistsWithDifferentFields(LedgerError):
    status = 409
    code = "account_exists_with_different_fields"
    title = "An account with this id exists with different fields"


class SameAccount(LedgerError):
    status = 422
    code = "same_account"
    title = "Debit and credit account are the same"


class CurrencyMismatch(LedgerError):
    status = 422
    code = "currency_mismatch"
    title = "Currencies differ"


class AccountNotActive(LedgerError):
    status = 422
    code = "account_not_active"
    title = "Account is not active"


class InsufficientFunds(LedgerError):
    status = 422
    code = "insufficient_funds"
    title = "Insufficient funds"


class AmountOverflow(LedgerError):
    status = 422
    code = "amount_overflow"
    title = "Balance would overflow"


class TransferExistsWithDifferentFields(LedgerError):
    status = 409
    code = "transfer_exists_with_different_fields"
    title = "A transfer with this id exists with different fields"


class TransferAlreadyVoided(LedgerError):
    status = 409
    code = "transfer_already_voided"
    title = "This transfer id was voided"


class TransferNotPending(LedgerError):
    status = 409
    code = "transfer_not_pending"
    title = "Transfer is not pending"


class TransferNotPosted(LedgerError):
    status = 422
    code = "transfer_not_posted"
    title = "Only posted transfers can be reversed"


class PostExceedsPending(LedgerError):
    status = 422
    code = "post_exceeds_pending"
    title = "Amount exceeds the pending amount"


class ReversalExceedsPosted(LedgerError):
    status = 422
    code = "reversal_exceeds_posted"
    title = "Reversal exceeds the posted amount"


class IdempotencyKeyReused(LedgerError):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key was used with a different request"


class IdempotencyKeyInUse(LedgerError):
    status = 409
    code = "idempotency_key_in_use"
    title = "A request with this key is running"


class PreconditionRequired(LedgerError):
    status = 428
    code = "precondition_required"
    title = "If-Match header required"


class PreconditionFailed(LedgerError):
    status = 412
    code = "precondition_failed"
    title = "The resource has changed"


class AccountClosed(LedgerError):
    status = 422
    code = "account_closed"
    title = "Account is closed"


class AccountNotEmpty(LedgerError):
    status = 422
    code = "account_not_empty"
    title = "Only accounts with zero balances can close"


class MinBalanceViolated(LedgerError):
    status = 422
    code = "min_balance_violated"
    title = "The new min_balance is above the available balance"


class Unauthorized(LedgerError):
    status = 401
    code = "unauthorized"
    title = "Missing, unknown or revoked API key"


class Forbidden(LedgerError):
    status = 403
    code = "forbidden"
    title = "This key's role may not do that"


class PayloadTooLarge(LedgerError):
    status = 413
    code = "payload_too_large"
    title = "Request body too large"


class NotCommitted(LedgerError):
    status = 422
    code = "not_committed"
    title = "Not committed: another item of the atomic batch failed"


class ServiceUnavailable(LedgerError):
    status = 503
    code = "service_unavailable"
    title = "The database is unavailable; retry later"


class EventsExpired(LedgerError):
    """The events right after the client's feed cursor were trimmed by retention: reading on
    would skip them silently, so the feed refuses instead."""

    status = 410
    code = "events_expired"
    title = "Events after this cursor are past retention"


class BenchAborted(ConfigurationError):
    """`ledger bench` could not run: the service or the database refused or was unreachable."""


class InvariantViolation(Exception):
    """The code was about to break a money invariant: a bug, never the client's fault (500)."""


class AuditVerifyBusy(LedgerError):
    """Verification reads and hashes the whole trail: a process runs a bounded number at once,
    and refuses another before starting it (503 with Retry-After) rather than queue it."""

    status = 503
    code = "audit_verify_busy"
    title = "An audit verification is running in this process already; retry later"


# -- money movement: exchanges, balancing and imported transfers, period lock, monitors --------


class NothingToMove(LedgerError):
    status = 422
    code = "nothing_to_move"
    title = "A balancing transfer found nothing it could move"


class ImportedOutOfOrder(LedgerError):
    status = 422
    code = "imported_out_of_order"
    title = "An imported transfer is older than an account's last entry"


class ImportedInFuture(LedgerError):
    status = 422
    code = "imported_in_future"
    title = "An imported transfer cannot happen after now"


class PeriodLocked(LedgerError):
    status = 422
    code = "period_locked"
    title = "The period is locked"


class PeriodLockBackwards(LedgerError):
    status = 409
    code = "period_lock_backwards"
    title = "The period lock only moves forward"


class PeriodLockInFuture(LedgerError):
    status = 422
    code = "period_lock_in_future"
    title = "The period lock cannot be after now"


class ExchangeViaInvalid(LedgerError):
    status = 422
    code = "exchange_via_invalid"
    title = "`via` must name one liquidity account for each of the two currencies"


class ExchangeSameCurrency(LedgerError):
    status = 422
    code = "exchange_same_currency"
    title = "An exchange moves between two different currencies"


class ExchangeExistsWithDifferentFields(LedgerError):
    status = 409
    code = "exchange_exists_with_different_fields"
    title = "Exchange exists with different fields"


class MonitorNotFound(LedgerError):
    status = 404
    code = "monitor_not_found"
    title = "Monitor not found"


# -- reporting ---------------------------------------------------------------------------------


class InvalidMetadataFilter(LedgerError):
    """A `metadata[...]` query parameter that is not `metadata[KEY]=VALUE`."""

    status = 422
    code = "invalid_metadata_filter"
    title = "Invalid metadata filter"


class CategoryNotFound(LedgerError):
    status = 404
    code = "category_not_found"
    title = "Category not found"


class CategoryCodeExists(LedgerError):
    status = 409
    code = "category_code_exists"
    title = "Category code already exists"


class CategoryExistsWithDifferentFields(LedgerError):
    status = 409
    code = "category_exists_with_different_fields"
    title = "Category exists with different fields"


class CategoryCycle(LedgerError):
    status = 422
    code = "category_cycle"
    title = "Category would be its own ancestor"


class CategoryMembershipNotFound(LedgerError):
    status = 404
    code = "category_membership_not_found"
    title = "Account is not in this category"


# -- bounds on what a client can grow (contract 9.1) ------------------------------------------


class MonitorLimitReached(LedgerError):
    status = 422
    code = "monitor_limit_reached"
    title = f"An account has at most {limits.MONITORS_PER_ACCOUNT_MAX} monitors"


class CategoryTooDeep(LedgerError):
    status = 422
    code = "category_too_deep"
    title = f"A category tree is at most {limits.CATEGORY_LEVELS_MAX} levels deep"


class CategoryChildrenLimitReached(LedgerError):
    status = 422
    code = "category_children_limit_reached"
    title = f"A category has at most {limits.CATEGORY_CHILDREN_MAX} child categories"


class CategoryAccountsLimitReached(LedgerError):
    status = 422
    code = "category_accounts_limit_reached"
    title = f"A category holds at most {limits.CATEGORY_ACCOUNTS_MAX} accounts"


class AccountCategoriesLimitReached(LedgerError):
    status = 422
    code = "account_categories_limit_reached"
    title = f"An account is in at most {limits.ACCOUNT_CATEGORIES_MAX} categories"


# -- verifiable audit (signed checkpoints, Merkle proofs) -----------------------------------------


class AuditRecordNotFound(LedgerError):
    status = 404
    code = "audit_record_not_found"
    title = "No audit record has this id"


class AuditRecordNotSealed(LedgerError):
    """The record exists but is not a leaf of the tree asked about (not sealed yet, or sealed
    after that tree size)."""

    status = 409
    code = "audit_record_not_sealed"
    title = "The audit record is not in this tree yet"


class AuditTreeSizeUnavailable(LedgerError):
    """A proof asked of a tree size the trail does not have yet, or a consistency proof whose
    `first` is larger than its `second`: well-formed sizes the trail's state refuses."""

    status = 422
    code = "audit_tree_size_unavailable"
    title = "The audit tree does not have that size"


class AuditCheckpointNotFound(LedgerError):
    status = 404
    code = "audit_checkpoint_not_found"
    title = "No signed audit checkpoint yet"


# -- webhooks (contract 9.2) ----------------------------------------------------------------------


class WebhookNotFound(LedgerError):
    status = 404
    code = "webhook_not_found"
    title = "Webhook endpoint not found"


class WebhookEndpointsLimit(LedgerError):
    status = 422
    code = "webhook_endpoints_limit"
    title = "At most 100 webhook endpoints"


class WebhookUrlRefused(LedgerError):
    """A URL the service will not deliver to: not https (unless allowed), credentials in it, or
    a literal private, loopback or link-local address (unless allowed)."""

    status = 422
    code = "webhook_url_refused"
    title = "The webhook URL is not allowed"


class WebhookDeliveryNotFound(LedgerError):
    status = 404
    code = "webhook_delivery_not_found"
    title = "No delivery of this event to this endpoint"


class WebhookDeliveryNotFailed(LedgerError):
    status = 409
    code = "webhook_delivery_not_failed"
    title = "Only a failed delivery can be retried"
