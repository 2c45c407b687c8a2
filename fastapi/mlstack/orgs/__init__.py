"""Organisations: a namespace labelled mlstack.io/org with a budget (ResourceQuota) and members."""
