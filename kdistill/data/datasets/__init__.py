"""Built-in data sets; importing this package registers them.

The detection sets (``canvas-mnist``, ...) register from :mod:`kdistill.detection.data`.
"""

from kdistill.data.datasets import diabetes, digits, image_folder, mnist, tabular, text

__all__ = ["diabetes", "digits", "image_folder", "mnist", "tabular", "text"]
