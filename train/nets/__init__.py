"""Network architectures, built by name through the registry."""
from .registry import create_model, get_builder, list_models, register

__all__ = ["create_model", "get_builder", "list_models", "register"]
