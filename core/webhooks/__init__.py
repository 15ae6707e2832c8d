"""Signed webhooks: a job that names a ``webhook_url`` (or whose key has a default one) is POSTed,
as the Standard Webhooks specification says (https://www.standardwebhooks.com), when it ends.

- :mod:`core.webhooks.signing`: the ``whsec_`` secrets and the ``webhook-*`` headers;
- :mod:`core.webhooks.outbox`: the durable outbox, written in the transaction that ends the job
  (:func:`core.webhooks.outbox.enqueue_webhook`), and the statements that claim and record
  deliveries;
- :mod:`core.webhooks.delivery`: one delivery attempt (httpx, async), under the SSRF rules of
  :mod:`core.ssrf`, and the backoff between attempts.
"""
