"""Reading and writing shapes."""
