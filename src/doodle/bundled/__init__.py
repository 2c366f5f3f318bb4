"""The base model shipped with the package (weights and category list)."""
