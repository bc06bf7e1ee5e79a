"""The auditor console: server-rendered pages under /console for people who review the ledger."""
