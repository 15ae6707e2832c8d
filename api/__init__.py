"""imagegate's HTTP service: wire dialects in, jobs submitted, answers rendered back."""
