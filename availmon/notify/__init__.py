"""Notifications: a durable PostgreSQL outbox written with each outage change (outbox.py),
delivered to webhooks with retries and backoff (webhook.py); payloads and signing in
events.py, settings in config.py. Import the submodules directly: config.py must stay light
because availmon.config imports it."""
