"""Outbound webhooks: signed HTTP notifications of a tenant's events to the tenant's own endpoints.

Apps declare their event types with `services.webhook_event_register` and emit events with
`services.webhook_emit`; see README.md for the flow, the payload and the signature."""
