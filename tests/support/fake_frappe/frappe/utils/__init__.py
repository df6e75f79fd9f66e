"""Fake ``frappe.utils`` (see ``frappe/__init__.py``)."""
