"""Moved: the read side of instances and history to `orchestrator.persistence.instances`, that of
definitions to `orchestrator.persistence.definitions`. The names the CLI and the benchmark
import stay importable from here."""

from orchestrator.persistence.instances import HistoryRow as HistoryRow
from orchestrator.persistence.instances import InstanceFilter as InstanceFilter
from orchestrator.persistence.instances import list_instances as list_instances
