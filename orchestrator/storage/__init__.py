"""The database edge shared by both sides: engine and transactions (`database`), the tables
(`tables`), the migrations runner (`migrate`) and LISTEN/NOTIFY (`wakeup`). The SQL of each
table is in `orchestrator.persistence`."""
