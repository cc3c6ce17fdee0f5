// Formats a price for display.
export function formatPrice(value: number, currency: string): string {
  return `${value.toFixed(2)} ${currency}`;
}
