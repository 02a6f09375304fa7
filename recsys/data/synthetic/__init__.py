"""The built-in default dataset: synthetic items with real images, titles and audio.

Hidden item attributes are rendered into each modality (one shared by all, the others private
to one), hidden user personas click by them, and everything is written in the project's dataset
format. See :func:`make_default_dataset`.
"""

from recsys.data.synthetic.generate import SIZES, DatasetSummary, make_default_dataset

__all__ = ["SIZES", "DatasetSummary", "make_default_dataset"]
