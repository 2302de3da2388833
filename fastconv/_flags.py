"""cuDNN's global flags, changed for a block and restored after it."""

import torch


def cudnn_flags(**changes):
    """torch.backends.cudnn.flags() with every flag as it is now except `changes` (e.g.
    allow_tf32=False). torch's context manager is the one way to change them where a test
    harness froze direct assignment (torch.testing's disable_global_flags), and it restores
    them afterwards."""
    c = torch.backends.cudnn
    flags = {
        "enabled": c.enabled,
        "benchmark": c.benchmark,
        "benchmark_limit": c.benchmark_limit if c.benchmark_limit is not None else 10,
        "deterministic": c.deterministic,
        "allow_tf32": c.allow_tf32,
    }
    flags.update(changes)
    return c.flags(**flags)
