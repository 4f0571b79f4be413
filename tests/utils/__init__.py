"""Helpers shared by tests of every package (imported as `tests.utils.*`; conftest files hold only fixtures)."""
