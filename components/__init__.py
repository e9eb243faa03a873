"""Reusable dashboard widgets and per-session factories. Imports core; core never imports this."""
