"""Built-in data sets; importing this package registers them.

The detection sets (``canvas-mnist``, ...) register from :mod:`kdistill.detection.data`, the text
sets (``sst2``, ``text-csv``) from :mod:`kdistill.text.data`; the registry imports both on its first lookup.
"""

from kdistill.data.datasets import diabetes, digits, image_folder, mnist, tabular

__all__ = ["diabetes", "digits", "image_folder", "mnist", "tabular"]
