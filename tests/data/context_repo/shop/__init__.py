from .pricing import apply_discount

__all__ = ["apply_discount"]
