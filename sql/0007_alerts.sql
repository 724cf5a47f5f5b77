-- Alerts: a Slack-compatible webhook per system (the worker's ALERT_WEBHOOK_URL is the default).
-- One message when a system goes from healthy to failed / invalid_config / partial, one when it
-- recovers. The URL holds the webhook's secret: it is never logged.
ALTER TABLE cdp.facebook_configurations ADD COLUMN IF NOT EXISTS alert_webhook_url TEXT;
