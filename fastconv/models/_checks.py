"""The argument checks of the model builders: fastconv._checks, which fastconv.nn shares."""

from .._checks import positive_int, probability  # noqa: F401
