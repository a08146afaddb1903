"""Built-in data sets; importing this package registers them."""

from kdistill.data.datasets import diabetes, digits, image_folder, mnist, tabular, text
from kdistill.detection import data as detection  # canvas-mnist, canvas-digits, ...

__all__ = ["detection", "diabetes", "digits", "image_folder", "mnist", "tabular", "text"]
