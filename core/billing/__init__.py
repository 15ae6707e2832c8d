"""Money, in one place.

- :mod:`core.billing.money`: parsing and formatting dollars, the one rounding rule (half up);
- :mod:`core.billing.prices`: the price table (a file format, validated and loaded);
- :mod:`core.billing.costs`: pure cost arithmetic (the estimate that is held, the actual cost);
- :mod:`core.billing.ledger`: where a hold is taken, an image charged, a hold released;
- :mod:`core.billing.repo`: the ledger's statements;
- :mod:`core.billing.reports`: usage reports shaped from the settled rows.

Nothing outside this package computes or formats an amount of money, and nothing outside it reads
or writes the ledger's table.
"""
