"""The unlearning engine: pure computation (torch, numpy, pydantic), no database, no Celery,
no web framework. Modules that need torch import it themselves; ``spec`` and ``config`` are
torch-free so the API can validate requests without loading the engine."""
