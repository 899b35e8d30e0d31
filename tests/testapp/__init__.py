"""A Django app with a model, for the key constructor tests."""
