"""One station's processes under one supervisor (``inspector station run``)."""
