"""HTTP plumbing shared by the services: problem+json errors, commands, idempotency."""
