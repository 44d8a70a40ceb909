"""The web interface for specialists, case managers and hospital IT: server-rendered pages
under /ui, signed in with the hub's own OAuth2 (authorization code with PKCE)."""
