"""matplotlib, loaded only by the functions that draw: fastconv computes its figures without it."""


def require(what: str):
    """The matplotlib package, or an ImportError that says which function needed it and how
    to get it."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        import matplotlib.image  # noqa: F401
    except ImportError:
        raise ImportError(
            f"{what} draws with matplotlib, which is not installed (pip install matplotlib); "
            "the functions that compute the figures work without it"
        ) from None
    return matplotlib


def figure(what: str, **kwargs):
    """A new matplotlib Figure (see require()).

    A bare Figure (not pyplot) draws straight to a file: it leaves the user's pyplot state and
    backend alone (a notebook's inline plots keep working) and needs no display."""
    return require(what).figure.Figure(**kwargs)
