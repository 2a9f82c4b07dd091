"""matplotlib, imported on demand: pictures are optional, the models are not."""


def pyplot(purpose):
    """`matplotlib.pyplot` with the non-interactive Agg backend.

    Raises an ImportError naming `purpose` and the extra to install when
    matplotlib is absent.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"{purpose} needs matplotlib: pip install 'mnet-backbones[demo]' (or pip install matplotlib)."
        ) from None
    return plt
