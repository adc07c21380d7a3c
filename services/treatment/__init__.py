"""The treatment service."""
