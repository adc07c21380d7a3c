"""Who may do what: verified identities (tokens), their grants (events), and the one policy."""
