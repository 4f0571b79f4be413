"""videoqa: serve, feed and fine-tune LLaVA-Video video question-answering models."""

__version__ = "0.1.0"
