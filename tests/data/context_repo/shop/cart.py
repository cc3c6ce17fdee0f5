from dataclasses import dataclass


@dataclass
class LineItem:
    """One product line of a cart."""

    sku: str
    quantity: int
    unit_price: float


class ShoppingCart:
    """A customer's cart."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.items: list[LineItem] = []

    def add_item(self, sku: str, quantity: int, unit_price: float) -> LineItem:
        item = LineItem(sku, quantity, unit_price)
        self.items.append(item)
        return item

    def subtotal(self) -> float:
        return sum(i.quantity * i.unit_price for i in self.items)
