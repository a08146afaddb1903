"""Built-in data sets; importing this package registers them."""

from kdistill.data.datasets import digits, image_folder, mnist, tabular, text

__all__ = ["digits", "image_folder", "mnist", "tabular", "text"]
