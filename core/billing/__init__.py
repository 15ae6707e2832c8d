"""Money: the price table and pure cost functions (:mod:`core.billing.pricing`), and the ledger's
rows (:mod:`core.billing.ledger`). Amounts are integer micro-dollars; prices are data."""
