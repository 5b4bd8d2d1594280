"""The server-rendered web UI: Django templates with htmx, charts from a vendored Chart.js."""
