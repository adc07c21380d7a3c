"""Errors the domain and the plumbing raise; the HTTP layer maps each to a problem+json status.

Messages are written for a study coordinator: say what is wrong and what to do about it.
"""


class DomainError(Exception):
    status = 400
    title = "Request refused"

    def __init__(self, detail: str, *, retryable: bool = False):
        super().__init__(detail)
        self.detail = detail
        # True when the refusal may go away by itself: this service has not yet learned (from Kafka)
        # what another service already recorded. Clients may retry such a refusal after a moment.
        self.retryable = retryable


class InvalidCommand(DomainError):
    """The input itself is wrong (fix the data and resend)."""

    status = 422
    title = "Invalid input"


class RuleViolation(DomainError):
    """The input is well formed but the protocol does not allow it in the subject's current state."""

    status = 409
    title = "Not allowed by the protocol"


class ConcurrentChange(DomainError):
    status = 409
    title = "Changed by someone else"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class SubjectNotFound(NotFound):
    title = "Unknown subject"


class DependencyUnavailable(DomainError):
    status = 503
    title = "Service temporarily unavailable"


class Unauthenticated(DomainError):
    """No token, or one that cannot be trusted: get a token from the study's issuer."""

    status = 401
    title = "Not authenticated"

    def __init__(self, detail: str):
        super().__init__(detail)
        description = detail.replace('"', "'")
        self.headers = {
            "WWW-Authenticate": f'Bearer realm="ucart", error="invalid_token", error_description="{description}"'
        }


class Forbidden(DomainError):
    """Authenticated, but no grant of the person allows this action."""

    status = 403
    title = "Not allowed for your role"
