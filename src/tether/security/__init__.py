"""Connection security: checks that run before a consumer sees a connection (see ``tether.security.websocket``)."""
