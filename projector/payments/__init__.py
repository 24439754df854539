"""The payments process manager (``payments:process``), see :mod:`.process`."""
