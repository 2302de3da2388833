"""matplotlib, loaded only by the functions that draw: fastconv computes its figures without it."""


def figure(what: str, **kwargs):
    """A new matplotlib Figure, or an ImportError that says which function needed matplotlib
    and how to get it.

    A bare Figure (not pyplot) draws straight to a file: it leaves the user's pyplot state and
    backend alone (a notebook's inline plots keep working) and needs no display."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            f"{what} draws with matplotlib, which is not installed (pip install matplotlib); "
            "the functions that compute the figures work without it"
        ) from None
    return Figure(**kwargs)
