"""Training data that limner builds itself, offline, from openly licensed sources.

`limner.data.emoji`: captioned emoji scenes for the built-in text-to-image model.
"""
