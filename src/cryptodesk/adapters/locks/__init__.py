"""Named locks that keep a scheduled job to one run at a time across processes."""
