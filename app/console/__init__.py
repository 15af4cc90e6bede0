"""The compliance console: read-only HTML pages served by the API at ``/console``."""
