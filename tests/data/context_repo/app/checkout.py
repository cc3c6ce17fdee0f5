from shop import apply_discount
from shop.cart import ShoppingCart
from shop.pricing import with_tax


def checkout(owner: str, coupon: float) -> float:
    cart = ShoppingCart(owner)
    cart.add_item("apple", 3, 0.5)
    net = apply_discount(cart.subtotal(), coupon)
    return with_tax(net)
