"""Authentication (OAuth2 / SMART), authorization (scopes, roles, per-case rules), audit."""
