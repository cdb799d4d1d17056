"""Observability, shared by every process: traces (OpenTelemetry), metrics (Prometheus) and
structured logs. Each module is safe to use when its output is switched off: the calls cost
next to nothing then."""
