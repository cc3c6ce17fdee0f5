import { formatPrice } from "./format";

export function render(total: number): string {
  return formatPrice(total, "EUR");
}
