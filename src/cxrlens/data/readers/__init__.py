"""One module per data layout; :mod:`cxrlens.data.sources` detects the layout and combines the sources.

Each module has a :class:`~cxrlens.data.readers.base.Source` subclass (files parsed on construction, the
collection's label vocabulary known before reading, records read against the grown label tree) plus ``matches``
(a CSV header of this layout?) and/or ``find`` (a folder of this layout?).
"""
