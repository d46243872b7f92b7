"""Password hashing and token handling."""
