"""`python -m fedmpi analyze`, split by job: cli, summary, tables (CSV), plots, reestimate."""
