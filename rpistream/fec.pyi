from rpistream._fec import *  # noqa: F403  (same API in the compiled module and the twin)
